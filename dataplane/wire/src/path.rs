//! Paths on the wire: relative to the job's root, `/`-separated, and unable to name
//! anything outside it. The target resolves them again with `openat2(RESOLVE_BENEATH)`;
//! this check is the first of the two walls.

use crate::WireError;

pub const PATH_BYTES_MAX: usize = 4096;
pub const PATH_COMPONENT_BYTES_MAX: usize = 255;

/// A validated relative path (raw bytes: Linux names need not be UTF-8). The empty
/// path is the job's root itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, WireError> {
        let bytes = bytes.into();
        let fail = |reason| Err(WireError::Path { path: String::from_utf8_lossy(&bytes).into_owned(), reason });
        if bytes.len() > PATH_BYTES_MAX {
            return fail("longer than 4096 bytes");
        }
        if bytes.is_empty() {
            return Ok(RelPath(bytes));
        }
        if bytes[0] == b'/' {
            return fail("absolute paths are not allowed");
        }
        if bytes.contains(&0) {
            return fail("contains a NUL byte");
        }
        for comp in bytes.split(|&b| b == b'/') {
            if comp.is_empty() {
                return fail("empty component");
            }
            if comp == b"." || comp == b".." {
                return fail("`.` and `..` components are not allowed");
            }
            if comp.len() > PATH_COMPONENT_BYTES_MAX {
                return fail("component longer than 255 bytes");
            }
        }
        Ok(RelPath(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path relative to a root, to join to it (the root itself is empty).
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Parent directory and last component; `None` for the root.
    pub fn split_last(&self) -> Option<(RelPath, &[u8])> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some((RelPath(self.0[..i].to_vec()), &self.0[i + 1..])),
            None => Some((RelPath::root(), &self.0[..])),
        }
    }

    /// `self/name`, checked.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, WireError> {
        if self.0.is_empty() {
            return RelPath::new(name.to_vec());
        }
        let mut v = self.0.clone();
        v.push(b'/');
        v.extend_from_slice(name);
        RelPath::new(v)
    }

    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Debug for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}
