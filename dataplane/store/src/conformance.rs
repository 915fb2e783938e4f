//! The suite every engine must pass.

use crate::*;

fn loc(p: &str, off: u64) -> ChunkLocation {
    ChunkLocation { path: p.as_bytes().to_vec(), offset: off, len: 100 }
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
    assert_eq!(store.target_records(&[b"/t/x".to_vec(), b"/t/z".to_vec()]).unwrap(), vec![Some(t), None]);
    assert_eq!(store.source_records(&[b"/s/x".to_vec()]).unwrap(), vec![Some(s)]);
    store.apply(StoreBatch { ops: vec![StoreOp::DeleteChunk(a), StoreOp::DeleteTarget(b"/t/x".to_vec())] }).unwrap();
    assert_eq!(store.chunk_locations(&[a]).unwrap(), vec![None]);
    assert_eq!(store.target_records(&[b"/t/x".to_vec()]).unwrap(), vec![None]);
    renames(store);
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
    assert_eq!(store.chunk_locations(&[[2u8; 32]]).unwrap(), vec![Some(loc("/t/y", 65536))]);
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
