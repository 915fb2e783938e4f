//! The version of a file the target holds, as a delta basis for its next version
//! (`xtsync_chunker::delta`): its signature goes to the source with the `Want`, and
//! chunks that come back as deltas are rebuilt from it here, then checked against their
//! names like every chunk.
//!
//! Small files (≤ [`BASIS_FILE_BYTES_MAX`]) serve whole ([`open`]): there a chunk is
//! most of a file and an edit costs a whole chunk. For larger files, the stretches of
//! local files that the chunks around the wanted ones point to serve
//! ([`read_regions`], planned by `crate::basis_regions`).

use std::cell::Cell;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use rustix::fs::{Mode, OFlags};
use xtsync_chunker::delta::{self, Signature};
use xtsync_chunker::ChunkCodec;
use xtsync_wire::Basis;

use crate::basis_regions::Region;
use crate::chunk_error::ChunkError;
use crate::local_readers::LocalReaders;

/// Largest file read as a basis.
pub(crate) const BASIS_FILE_BYTES_MAX: u64 = 1 << 20;
/// Basis bytes one session holds at most (segments waiting for their chunks); past it,
/// files go without a basis.
pub(crate) const SESSION_BASIS_BYTES_MAX: u64 = 64 << 20;

/// A basis held for one segment's wanted chunks; counted in its session's `held`
/// while it lives.
pub(crate) struct DeltaBasis {
    bytes: Vec<u8>,
    block_bytes: u32,
    blocks: u64,
    held: Rc<Cell<u64>>,
}

impl Drop for DeltaBasis {
    fn drop(&mut self) {
        self.held.set(self.held.get().saturating_sub(self.bytes.len() as u64));
    }
}

/// The regular file `name` in `dir` (never through a symlink) as a basis, with its
/// signature for the source; `None` if there is none worth using, or if the session
/// already holds [`SESSION_BASIS_BYTES_MAX`] (`held`).
pub(crate) fn open(dir: BorrowedFd<'_>, name: &[u8], held: &Rc<Cell<u64>>) -> Option<(DeltaBasis, Basis)> {
    if held.get() + BASIS_FILE_BYTES_MAX > SESSION_BASIS_BYTES_MAX {
        return None;
    }
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let size = st.st_size as u64;
    let is_file = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
    if !is_file || size > BASIS_FILE_BYTES_MAX || size < u64::from(delta::BLOCK_BYTES_MIN) {
        return None;
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::fs::File::from(fd).take(BASIS_FILE_BYTES_MAX).read_to_end(&mut bytes).ok()?;
    let sig = Signature::of(&bytes, delta::block_bytes_for(bytes.len() as u64));
    let blocks = sig.blocks.len() as u64;
    held.set(held.get() + bytes.len() as u64);
    let basis = DeltaBasis { bytes, block_bytes: sig.block_bytes, blocks, held: held.clone() };
    Some((basis, Basis { block_bytes: sig.block_bytes, blocks: sig.blocks }))
}

/// The `regions` of local files (see `crate::basis_regions`), read through `readers`,
/// as one basis; `None` if nothing worth using could be read, or if the session already
/// holds [`SESSION_BASIS_BYTES_MAX`]. The signature is computed off the executor.
pub(crate) async fn read_regions(
    readers: &mut LocalReaders,
    regions: &[Region],
    held: &Rc<Cell<u64>>,
) -> Option<(DeltaBasis, Basis)> {
    let total: u64 = regions.iter().map(|r| r.bytes).sum();
    if total < u64::from(delta::BLOCK_BYTES_MIN) || held.get() + total > SESSION_BASIS_BYTES_MAX {
        return None;
    }
    let block = delta::block_bytes_for(total) as usize;
    let mut bytes = Vec::with_capacity(total as usize);
    for r in regions {
        let Ok(file) = readers.get(&r.path).await else { continue };
        // Short at the end of the file; whole blocks only, so that every block of the
        // basis lies within one region.
        let Ok(data) = file.read_at(r.offset, r.bytes as usize).await else { continue };
        bytes.extend_from_slice(&data[..data.len() / block * block]);
    }
    if bytes.is_empty() {
        return None;
    }
    let (bytes, sig) = glommio::executor()
        .spawn_blocking(move || {
            let sig = Signature::of(&bytes, block as u32);
            (bytes, sig)
        })
        .await;
    held.set(held.get() + bytes.len() as u64);
    let basis = DeltaBasis { bytes, block_bytes: sig.block_bytes, blocks: sig.blocks.len() as u64, held: held.clone() };
    Some((basis, Basis { block_bytes: sig.block_bytes, blocks: sig.blocks }))
}

/// Rebuilds a chunk of `raw_len` bytes from its zstd-compressed delta against `basis`.
pub(crate) fn rebuild(
    basis: &DeltaBasis,
    codec: &mut ChunkCodec,
    payload: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>, ChunkError> {
    // A delta is never much longer than the literal chunk it stands for.
    let delta_bytes_max = raw_len as usize + raw_len as usize / 8 + 64;
    let mut ops = Vec::new();
    codec.decompress_at_most(payload, delta_bytes_max, &mut ops)?;
    let b = basis.block_bytes as usize;
    delta::apply(&ops, basis.block_bytes, basis.blocks, raw_len as usize, |i, out| {
        let from = i as usize * b;
        out.extend_from_slice(&basis.bytes[from..from + b]);
        Ok(())
    })
    .map_err(ChunkError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_chunk_sent_as_a_delta_is_rebuilt_from_the_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = (0..4000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        std::fs::write(dir.path().join("f"), &old).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("link")).unwrap();
        std::fs::write(dir.path().join("tiny"), b"too small").unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let held = Rc::new(Cell::new(0));
        assert!(open(d.as_fd(), b"link", &held).is_none(), "never through a symlink");
        assert!(open(d.as_fd(), b"tiny", &held).is_none());
        assert!(open(d.as_fd(), b"missing", &held).is_none());
        let (basis, wire) = open(d.as_fd(), b"f", &held).unwrap();
        assert_eq!(held.get(), old.len() as u64);

        let mut new = old.clone();
        new.splice(10_000..10_000, b"inserted\n".iter().copied());
        let sig = Signature { block_bytes: wire.block_bytes, blocks: wire.blocks };
        let (ops, literal) = delta::encode(&sig, &new);
        assert!(literal < 3 * sig.block_bytes as usize);
        let mut codec = ChunkCodec::default();
        let mut payload = Vec::new();
        codec.compress(&ops, 1, false, &mut payload);
        assert_eq!(rebuild(&basis, &mut codec, &payload, new.len() as u32).unwrap(), new);
        assert!(rebuild(&basis, &mut codec, &payload, new.len() as u32 + 1).is_err());
        assert!(rebuild(&basis, &mut codec, b"not zstd", 100).is_err());
        drop(basis);
        assert_eq!(held.get(), 0, "released with the segment");
        held.set(SESSION_BASIS_BYTES_MAX);
        assert!(open(d.as_fd(), b"f", &held).is_none(), "the session holds enough");
    }
}
