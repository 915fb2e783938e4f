use super::*;

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_s: 1_700_000_000,
        mtime_ns: 5,
        xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
    }
}

fn samples() -> Vec<Message> {
    let p = |s: &str| RelPath::new(s).unwrap();
    vec![
        Message::Hello(Hello {
            job_id: 1,
            run_id: 2,
            session_index: 0,
            session_count: 2,
            target_root: "/t".into(),
            flags: Hello::FLAG_DELETE,
        }),
        Message::Ready(Ready { target_kernel_tls: true }),
        Message::HelloAck(HelloAck { session_id: 9, tree_id: [7; 32] }),
        Message::Entries(Entries {
            batch: 3,
            entries: vec![
                Entry {
                    path: RelPath::root(),
                    meta: meta(),
                    kind: EntryKind::Dir { children: Some(vec![b"a".to_vec(), b"b c".to_vec()]) },
                    renamed_from: None,
                },
                Entry {
                    path: p("a/l"),
                    meta: meta(),
                    kind: EntryKind::Symlink { target: b"../x".to_vec() },
                    renamed_from: None,
                },
                Entry { path: p("a/h"), meta: meta(), kind: EntryKind::HardLink { to: p("a/f") }, renamed_from: None },
                Entry {
                    path: p("a/f"),
                    meta: meta(),
                    kind: EntryKind::File { size: 10, digest: [7; 32] },
                    renamed_from: None,
                },
                Entry {
                    path: p("b/moved"),
                    meta: meta(),
                    kind: EntryKind::File { size: 1 << 23, digest: [9; 32] },
                    renamed_from: Some(p("a/old")),
                },
                Entry {
                    path: p("d2"),
                    meta: meta(),
                    kind: EntryKind::Dir { children: None },
                    renamed_from: Some(p("d1")),
                },
            ],
        }),
        Message::EntriesReply(EntriesReply { batch: 3, need: vec![3], renamed: vec![4, 5] }),
        Message::FileBegin(FileBegin {
            file_id: 4,
            path: p("a/f"),
            meta: meta(),
            size: 1 << 40,
            digest: Some([3; 32]),
        }),
        Message::Segment(Segment {
            file_id: 4,
            seg_no: 0,
            chunks: vec![ChunkRef { name: [1; 32], len: 5, zero: false }],
        }),
        Message::Want(Want::from_flags(4, 0, &[true, false, true])),
        Message::Want(Want {
            basis: Some(Basis { block_bytes: 512, blocks: vec![(1, 2), (u32::MAX, 0)] }),
            ..Want::from_flags(5, 1, &[true])
        }),
        Message::ChunkData(ChunkData {
            file_id: 4,
            seg_no: 0,
            index: 2,
            encoding: 1,
            raw_len: 5,
            data: b"hello".to_vec(),
        }),
        Message::FileEnd(FileEnd { file_id: 4, digest: [2; 32], aborted: false }),
        Message::FileDone(FileDone {
            file_id: 4,
            error: Some("disk full".into()),
            chunks_reused: 1,
            chunks_received: 2,
        }),
        Message::EndOfPass(EndOfPass { files: 12 }),
        Message::PassDone(PassDone { entries_deleted: 1, files_committed: 2, removed: vec![] }),
        Message::PassDone(PassDone {
            entries_deleted: 3,
            files_committed: 2,
            removed: vec![RelPath::new(b"d/stray".to_vec()).unwrap(), RelPath::new(b"old".to_vec()).unwrap()],
        }),
        Message::Error(ErrorMsg { message: "no".into() }),
    ]
}

fn split(frame: &[u8]) -> (FrameHeader, Vec<u8>) {
    let h = decode_header(frame[..8].try_into().unwrap()).unwrap();
    assert_eq!(h.payload_bytes as usize, frame.len() - 8);
    (h, frame[8..].to_vec())
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let (h, payload) = split(&buf);
        assert_eq!(Message::decode(h.kind, payload).unwrap(), m);
    }
}

#[test]
fn want_bitmap_reads_back() {
    let w = Want::from_flags(1, 0, &[true, false, false, false, false, false, false, false, true]);
    assert!(w.wants(0) && !w.wants(1) && w.wants(8) && !w.wants(9) && !w.wants(1000));
}

#[test]
fn header_checks_version_size_and_reserved_bits() {
    let mut buf = Vec::new();
    Message::EndOfPass(EndOfPass { files: 1 }).encode(&mut buf);
    let mut h: [u8; 8] = buf[..8].try_into().unwrap();
    h[0] = 9;
    assert_eq!(decode_header(&h), Err(WireError::Version(9)));
    let mut h: [u8; 8] = buf[..8].try_into().unwrap();
    h[4..8].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
    assert!(matches!(decode_header(&h), Err(WireError::Oversized(_))));
    let mut h: [u8; 8] = buf[..8].try_into().unwrap();
    h[2] = 1;
    assert!(matches!(decode_header(&h), Err(WireError::Reserved(_))));
}

#[test]
fn paths_that_leave_the_root_are_refused() {
    for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/", "x\0y"] {
        assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
    }
    let long = "a".repeat(256);
    assert!(RelPath::new(long).is_err());
    assert!(RelPath::new("a/b c/ü").is_ok());
    // A path smuggled inside an otherwise valid frame is refused by the decoder.
    let mut buf = Vec::new();
    Message::FileBegin(FileBegin {
        file_id: 1,
        path: RelPath::new("a/b").unwrap(),
        meta: Meta::default(),
        size: 0,
        digest: None,
    })
    .encode(&mut buf);
    let pos = buf.windows(3).position(|w| w == b"a/b").unwrap();
    buf[pos..pos + 3].copy_from_slice(b"../");
    let (h, payload) = split(&buf);
    assert!(matches!(Message::decode(h.kind, payload), Err(WireError::Path { .. })));
}

fn entries_frame(entry: Entry) -> Vec<u8> {
    let mut buf = Vec::new();
    Message::Entries(Entries { batch: 1, entries: vec![entry] }).encode(&mut buf);
    buf
}

#[test]
fn renamed_from_is_refused_where_it_means_nothing_or_escapes() {
    let p = |s: &str| RelPath::new(s).unwrap();
    let file = EntryKind::File { size: 1, digest: [1; 32] };
    let bad = [
        (p("a/l"), EntryKind::Symlink { target: b"x".to_vec() }, p("a/k")),
        (p("a/h"), EntryKind::HardLink { to: p("a/f") }, p("a/g")),
        (p("a/f"), file.clone(), p("a/f")),
        (RelPath::root(), EntryKind::Dir { children: None }, p("d")),
    ];
    for (path, kind, from) in bad {
        let (h, payload) = split(&entries_frame(Entry { path, meta: meta(), kind, renamed_from: Some(from) }));
        assert_eq!(Message::decode(h.kind, payload), Err(WireError::Invalid("entry.renamed_from")));
    }
    // A from-path that leaves the root is refused like any other path.
    let mut buf = entries_frame(Entry { path: p("new"), meta: meta(), kind: file, renamed_from: Some(p("x/old")) });
    let pos = buf.windows(5).position(|w| w == b"x/old").unwrap();
    buf[pos..pos + 5].copy_from_slice(b"../ol");
    let (h, payload) = split(&buf);
    assert!(matches!(Message::decode(h.kind, payload), Err(WireError::Path { .. })));
}

#[test]
fn lying_counts_do_not_allocate_or_panic() {
    // An Entries frame claiming 4096 entries with 4 bytes of payload.
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&4096u32.to_le_bytes());
    assert!(matches!(Message::decode(3, payload), Err(WireError::Truncated(_))));
    let mut payload = vec![0u8; 12];
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Message::decode(6, payload), Err(WireError::TooMany { .. })));
}

/// Seeded mutation fuzzing of the decoder in the regular suite. Replay a seed with XTSYNC_FUZZ_SEED=N.
#[test]
fn mutated_frames_never_panic() {
    let seed: u64 = std::env::var("XTSYNC_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    println!("seed {seed}");
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut frames: Vec<Vec<u8>> = samples()
        .iter()
        .map(|m| {
            let mut b = Vec::new();
            m.encode(&mut b);
            b
        })
        .collect();
    // And a compressed one: mutations land in the zstd stream and its header.
    let mut big = Vec::new();
    big_entries().encode(&mut big);
    frames.push(compress_frame(&big, 3).expect("compresses"));
    for _ in 0..20_000 {
        let mut f = frames[(next() as usize) % frames.len()].clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % f.len();
            f[i] = next() as u8;
        }
        if next() % 4 == 0 {
            let cut = (next() as usize) % f.len();
            f.truncate(cut.max(8));
        }
        let kind = f[1];
        let _ = Message::decode(kind, f[8..].to_vec());
    }
}

#[test]
fn borrowed_chunk_data_encodes_like_the_owned_message() {
    let owned = ChunkData { file_id: 3, seg_no: 4, index: 5, encoding: 1, raw_len: 9, data: b"zstd bytes".to_vec() };
    let mut a = Vec::new();
    Message::ChunkData(owned.clone()).encode(&mut a);
    let mut b = vec![0xEE];
    encode_chunk_data(&mut b, 3, 4, 5, 1, 9, b"zstd bytes");
    assert_eq!(&b[1..], &a[..]);
    let h = decode_header(b[1..9].try_into().unwrap()).unwrap();
    assert_eq!(Message::decode(h.kind, b[9..].to_vec()).unwrap(), Message::ChunkData(owned));
}

#[test]
fn a_frame_around_a_body_written_elsewhere_is_the_whole_frame() {
    let body = b"raw chunk bytes sent by the kernel";
    let mut whole = Vec::new();
    encode_chunk_data(&mut whole, 7, 2, 11, 0, body.len() as u32, body);
    let (head, tail) = chunk_data_frame_around(7, 2, 11, 0, body.len() as u32, body.len() as u32);
    let spliced = [&head[..], &body[..], &tail[..]].concat();
    assert_eq!(spliced, whole);
    let h = decode_header(&head).unwrap();
    match Message::decode(h.kind, spliced[FRAME_HEADER_BYTES..].to_vec()).unwrap() {
        Message::ChunkData(c) => assert_eq!((c.file_id, c.index, &c.data[..]), (7, 11, &body[..])),
        other => panic!("decoded {other:?}"),
    }
}

/// A batch like a pass over a tree sends: many files of a few directories.
fn big_entries() -> Message {
    let entries = (0..500)
        .map(|i| Entry {
            path: RelPath::new(format!("src/module-{}/file-{i:05}.c", i % 7)).unwrap(),
            meta: meta(),
            kind: EntryKind::File { size: 4096 + i, digest: [(i % 251) as u8; 32] },
            renamed_from: None,
        })
        .collect();
    Message::Entries(Entries { batch: 8, entries })
}

#[test]
fn a_compressed_entry_batch_is_smaller_and_decodes_to_the_same_message() {
    let msg = big_entries();
    let mut frame = Vec::new();
    msg.encode(&mut frame);
    let packed = compress_frame(&frame, 3).expect("an entry batch compresses");
    assert!(packed.len() * 4 < frame.len(), "{} -> {} bytes", frame.len(), packed.len());
    let (h, payload) = split(&packed);
    assert_eq!(Message::decode(h.kind, payload).unwrap(), msg);
    // Small frames and chunk data go as they are.
    let mut small = Vec::new();
    Message::HelloAck(HelloAck { session_id: 1, tree_id: [0; 32] }).encode(&mut small);
    assert!(compress_frame(&small, 3).is_none());
    let mut chunk = Vec::new();
    Message::ChunkData(ChunkData { file_id: 1, seg_no: 0, index: 0, encoding: 0, raw_len: 4096, data: vec![0; 4096] })
        .encode(&mut chunk);
    assert!(compress_frame(&chunk, 3).is_none());
}

#[test]
fn compressed_frames_that_lie_are_refused_without_inflating() {
    let mut frame = Vec::new();
    big_entries().encode(&mut frame);
    let packed = compress_frame(&frame, 3).unwrap();
    let (h, payload) = split(&packed);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut p = payload.clone();
        edit(&mut p);
        Message::decode(h.kind, p)
    };
    // Announcing more than a frame may hold.
    let err = with(&|p| p[1..5].copy_from_slice(&(FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes())).unwrap_err();
    assert!(matches!(err, WireError::Oversized(_)), "{err}");
    // Announcing less than the data inflates to.
    assert!(with(&|p| p[1..5].copy_from_slice(&100u32.to_le_bytes())).is_err());
    // Nested, or chunk data inside.
    assert_eq!(with(&|p| p[0] = h.kind).unwrap_err(), WireError::Invalid("compressed.kind"));
    assert!(with(&|p| p[0] = 8).is_err());
    // Corrupt compressed bytes.
    assert!(with(&|p| {
        let n = p.len();
        p[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
    })
    .is_err());
    // Truncated before the length.
    assert!(Message::decode(h.kind, vec![3, 1]).is_err());
}
