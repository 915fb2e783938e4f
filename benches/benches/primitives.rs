use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xtsync_benches::{random_bytes, text_bytes};
use xtsync_chunker::{ChunkCodec, ChunkName, ChunkParams, Encoding, StreamChunker};
use xtsync_wire::{decode_header, ChunkData, ChunkRef, Message, Segment};

fn chunker(c: &mut Criterion) {
    let data = random_bytes(32 << 20, 1);
    let mut g = c.benchmark_group("fastcdc2020");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for avg_kib in [16u32, 64, 256, 1024] {
        let params = ChunkParams::from_avg(avg_kib << 10).unwrap();
        g.bench_with_input(BenchmarkId::new("avg_kib", avg_kib), &params, |b, p| {
            b.iter(|| {
                let mut chunker = StreamChunker::new(*p);
                let mut n = 0usize;
                for block in data.chunks(4 << 20) {
                    chunker.push(block, false, |_| n += 1);
                }
                chunker.push(&[], true, |_| n += 1);
                n
            })
        });
    }
    g.finish();
}

fn hasher(c: &mut Criterion) {
    let data = random_bytes(64 << 10, 2);
    let mut g = c.benchmark_group("blake3");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk_64kib", |b| b.iter(|| ChunkName::of(&data)));
    g.finish();
}

fn compressor(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd_level1_chunk_64kib");
    for (label, data) in [("text", text_bytes(64 << 10)), ("random", random_bytes(64 << 10, 3))] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut codec = ChunkCodec::default();
        let mut out = Vec::new();
        g.bench_function(BenchmarkId::new("compress", label), |b| b.iter(|| codec.compress(&data, 1, true, &mut out)));
        let enc = codec.compress(&data, 1, true, &mut out);
        let encoded = if enc == Encoding::Raw { data.clone() } else { out.clone() };
        let mut dec = Vec::new();
        g.bench_function(BenchmarkId::new("decompress", label), |b| {
            b.iter(|| codec.decompress(enc, &encoded, data.len(), &mut dec).unwrap())
        });
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_codec");
    let chunks: Vec<ChunkRef> =
        (0..1024u32).map(|i| ChunkRef { name: [i as u8; 32], len: 65536, zero: false }).collect();
    let segment = Message::Segment(Segment { file_id: 1, seg_no: 0, chunks });
    let data = Message::ChunkData(ChunkData {
        file_id: 1,
        seg_no: 0,
        index: 3,
        encoding: 0,
        raw_len: 65536,
        data: random_bytes(65536, 4),
    });
    for (label, msg) in [("segment_1024_chunks", segment), ("chunk_data_64kib", data)] {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| {
                frame.clear();
                msg.encode(&mut frame);
                frame.len()
            })
        });
        g.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| {
                let h = decode_header(frame[..8].try_into().unwrap()).unwrap();
                Message::decode(h.kind, frame[8..].to_vec()).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, chunker, hasher, compressor, codec);
criterion_main!(benches);
