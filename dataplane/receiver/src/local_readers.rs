//! Read handles on the local files that chunks are copied from, bounded, each with the
//! inode it was opened on (a file replaced since it was indexed is not read).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use glommio::io::BufferedFile;
use xtsync_store::ChunkLocation;

/// Open read handles on local files that chunks are copied from (bounded), with the
/// inode each was opened on.
#[derive(Default)]
pub(crate) struct LocalReaders {
    files: HashMap<Vec<u8>, (Rc<BufferedFile>, u64)>,
}

const LOCAL_READERS_MAX: usize = 64;

impl LocalReaders {
    pub(crate) async fn get(&mut self, path: &[u8]) -> std::io::Result<Rc<BufferedFile>> {
        if let Some((f, _)) = self.files.get(path) {
            return Ok(f.clone());
        }
        self.open(path).map(|(f, _)| f)
    }

    /// The file an index entry points to, if it is still the file that was indexed:
    /// `Ok(None)` when another inode is at its path now (a newer version replaced it),
    /// so that its chunks are asked for instead of failing the file that needs them.
    pub(crate) async fn get_indexed(&mut self, at: &ChunkLocation) -> std::io::Result<Option<Rc<BufferedFile>>> {
        let (file, ino) = match self.files.get(&at.path) {
            // A handle opened before the file was replaced still reads the old inode.
            Some((f, ino)) if at.ino == 0 || *ino == at.ino => (f.clone(), *ino),
            _ => self.open(&at.path)?,
        };
        Ok((at.ino == 0 || ino == at.ino).then_some(file))
    }

    fn open(&mut self, path: &[u8]) -> std::io::Result<(Rc<BufferedFile>, u64)> {
        if self.files.len() >= LOCAL_READERS_MAX {
            self.files.clear();
        }
        let fd = rustix::fs::open(
            std::ffi::OsStr::from_bytes(path),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let ino = rustix::fs::fstat(&fd)?.st_ino;
        // SAFETY: fresh fd, ownership moves into the glommio file.
        let f = Rc::new(unsafe { BufferedFile::from_raw_fd(fd.into_raw_fd()) });
        self.files.insert(path.to_vec(), (f.clone(), ino));
        Ok((f, ino))
    }

    pub(crate) fn forget(&mut self, path: &[u8]) {
        self.files.remove(path);
    }
}
