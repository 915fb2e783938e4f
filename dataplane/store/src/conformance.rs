//! The suite every engine must pass.

use crate::*;

fn loc(p: &str, off: u64) -> ChunkLocation {
    ChunkLocation {
        path: p.as_bytes().to_vec(),
        offset: off,
        len: 100,
        ino: 7 + off,
        ctime_ns: 1_700_000_000_000_000_000,
    }
}

fn suite(store: &dyn WorkerStore) {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    assert_eq!(store.chunk_locations(&[a, b]).unwrap(), vec![None, None]);
    let t = TargetRecord { ino: 5, size: 10, mtime_ns: -3, digest: [9; 32] };
    let s = SourceRecord { dev: 1, ino: 2, size: 3, mtime_ns: 4, ctime_ns: 5, digest: [6; 32] };
    store
        .apply(StoreBatch {
            ops: vec![
                StoreOp::PutChunk(a, loc("/t/x", 0)),
                StoreOp::PutChunk(b, loc("/t/y", 65536)),
                StoreOp::PutTarget(b"/t/x".to_vec(), t),
                StoreOp::PutSource(b"/s/x".to_vec(), s),
            ],
        })
        .unwrap();
    assert_eq!(store.chunk_locations(&[b, a]).unwrap(), vec![Some(loc("/t/y", 65536)), Some(loc("/t/x", 0))]);
    // Just written, the records are in memory.
    assert_eq!(store.chunk_locations_in_memory(&[b, [3; 32]]).unwrap(), Some(vec![Some(loc("/t/y", 65536)), None]));
    assert_eq!(store.target_records(&[b"/t/x".to_vec(), b"/t/z".to_vec()]).unwrap(), vec![Some(t), None]);
    assert_eq!(store.source_records(&[b"/s/x".to_vec()]).unwrap(), vec![Some(s)]);
    store.apply(StoreBatch { ops: vec![StoreOp::DeleteChunk(a), StoreOp::DeleteTarget(b"/t/x".to_vec())] }).unwrap();
    assert_eq!(store.chunk_locations(&[a]).unwrap(), vec![None]);
    assert_eq!(store.target_records(&[b"/t/x".to_vec()]).unwrap(), vec![None]);
    renames(store);
    synced(store);
    outbox(store);
}

fn outbox(store: &dyn WorkerStore) {
    assert!(store.outbox(10).unwrap().is_empty());
    // Sequence numbers order the records numerically, not as text.
    for seq in [256u64, 2, 1 << 40] {
        store.outbox_put(seq, format!("r{seq}").as_bytes()).unwrap();
    }
    let seqs: Vec<u64> = store.outbox(10).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, vec![2, 256, 1 << 40]);
    assert_eq!(store.outbox(1).unwrap(), vec![(2, b"r2".to_vec())]);
    store.outbox_delete(2).unwrap();
    store.outbox_delete(3).unwrap(); // absent: nothing to do
    assert_eq!(store.outbox(10).unwrap().len(), 2);
}

fn synced(store: &dyn WorkerStore) {
    let st = |ino| SyncedEntry { stat: EntryStat { dev: 1, ino, size: 2, mtime_ns: 3, ctime_ns: 4 }, generation: 7 };
    let put = |job, dir: &str, name: &str, ino| StoreOp::PutSynced {
        job,
        dir: dir.as_bytes().to_vec(),
        name: name.as_bytes().to_vec(),
        entry: st(ino),
    };
    let basis = SyncedBasis { token: [5; 32], verified_unix_s: 6, generation: 7 };
    let ops = vec![
        put(1, "", "", 1),
        put(1, "", "a", 2),
        put(1, "", "a.txt", 3),
        put(1, "a", "x", 4),
        put(1, "a/x", "y", 5),
        put(2, "", "a", 6),
        StoreOp::PutSyncedBasis(1, basis),
    ];
    store.apply(StoreBatch { ops }).unwrap();
    let names = |job, dir: &str| -> Vec<(String, u64)> {
        let entries = store.synced_entries(job, dir.as_bytes()).unwrap();
        entries.into_iter().map(|(n, e)| (String::from_utf8(n).unwrap(), e.stat.ino)).collect()
    };
    assert_eq!(names(1, ""), vec![("".into(), 1), ("a".into(), 2), ("a.txt".into(), 3)]);
    assert_eq!(names(1, "a"), vec![("x".into(), 4)]);
    assert_eq!(names(1, "a/x"), vec![("y".into(), 5)]);
    assert_eq!(store.synced_basis(1).unwrap(), Some(basis));
    assert_eq!(store.synced_basis(2).unwrap(), None);
    // Forgetting a directory forgets what is below it, not its siblings.
    let forget = StoreOp::ForgetSynced { job: 1, dir: Vec::new(), name: b"a".to_vec() };
    store.apply(StoreBatch { ops: vec![forget] }).unwrap();
    assert_eq!(names(1, ""), vec![("".into(), 1), ("a.txt".into(), 3)]);
    assert_eq!((names(1, "a"), names(1, "a/x")), (vec![], vec![]));
    assert_eq!(names(2, ""), vec![("a".into(), 6)], "another job's entries stay");
}

fn renames(store: &dyn WorkerStore) {
    let rec = |ino, size, d| SourceRecord { dev: 7, ino, size, mtime_ns: 1, ctime_ns: 2, digest: [d; 32] };
    store
        .apply(StoreBatch {
            ops: vec![
                StoreOp::PutSource(b"/s/a".to_vec(), rec(10, 4096, 1)),
                StoreOp::PutSource(b"/s/b".to_vec(), rec(11, 4096, 2)),
                StoreOp::PutSource(b"/s/c".to_vec(), rec(12, 4097, 1)),
                StoreOp::PutMoved(b"/t/old".to_vec(), b"/t/new".to_vec()),
            ],
        })
        .unwrap();
    assert_eq!(store.source_path_of_inode(7, 11).unwrap(), Some(b"/s/b".to_vec()));
    assert_eq!(store.source_path_of_inode(8, 11).unwrap(), None);
    let mut of_size = store.source_paths_of_size(4096).unwrap();
    of_size.sort();
    assert_eq!(of_size, vec![([1; 32], b"/s/a".to_vec()), ([2; 32], b"/s/b".to_vec())]);
    assert_eq!(store.source_paths_of_size(4095).unwrap(), vec![]);
    assert!(store.has_source_records_under(b"/s").unwrap());
    assert!(store.has_source_records_under(b"/").unwrap());
    assert!(!store.has_source_records_under(b"/s/a").unwrap(), "a file has nothing beneath it");
    assert!(!store.has_source_records_under(b"/t").unwrap());
    assert_eq!(
        store.moved_to(&[b"/t/old".to_vec(), b"/t/new".to_vec()]).unwrap(),
        vec![Some(b"/t/new".to_vec()), None]
    );
}

#[test]
fn mem_engine_conforms() {
    suite(&MemStore::default());
}

#[test]
fn rocks_engine_conforms_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RocksStore::open(dir.path()).unwrap();
        suite(&store);
    }
    let store = RocksStore::open(dir.path()).unwrap();
    // The outbox records the suite left are there after the reopen.
    assert_eq!(store.outbox(10).unwrap(), vec![(256, b"r256".to_vec()), (1 << 40, b"r1099511627776".to_vec())]);
    // Enough records for many data blocks, written out to a table file: none of those
    // blocks is cached yet. The in-memory lookup declines a name that is there, and
    // answers one that is not from the table's Bloom filter.
    let many: Vec<StoreOp> = (0..20_000u32)
        .map(|i| {
            let mut name = [0u8; 32];
            name[..4].copy_from_slice(&i.to_be_bytes());
            name[4] = 0xaa;
            StoreOp::PutChunk(name, loc("/t/many", u64::from(i) << 16))
        })
        .collect();
    store.apply(StoreBatch { ops: many }).unwrap();
    store.flush_memtables();
    drop(store);
    let store = RocksStore::open(dir.path()).unwrap();
    assert_eq!(store.chunk_locations_in_memory(&[[2u8; 32]]).unwrap(), None);
    // Within the table's key range (0x00000005aa… and 0x00000006aa… are there), so
    // only the filter can rule it out.
    let mut absent = [0u8; 32];
    absent[..4].copy_from_slice(&5u32.to_be_bytes());
    absent[4] = 0xab;
    assert_eq!(store.chunk_locations_in_memory(&[absent]).unwrap(), Some(vec![None]));
    assert_eq!(store.chunk_locations(&[[2u8; 32]]).unwrap(), vec![Some(loc("/t/y", 65536))]);
    // Read once, its block is cached.
    assert_eq!(store.chunk_locations_in_memory(&[[2u8; 32]]).unwrap(), Some(vec![Some(loc("/t/y", 65536))]));
}

#[test]
fn mem_engine_failure_is_an_error() {
    let store = MemStore::default();
    store.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(store.chunk_locations(&[[0; 32]]).is_err());
}

#[test]
fn unopenable_path_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let err = RocksStore::open(&file).err().expect("a file is not a database").to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
}
