//! Borrowed descriptors of glommio's files and sockets, which expose only `AsRawFd`.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Borrows the descriptor `owner` holds, for as long as `owner` is borrowed: the one
/// place where a raw descriptor becomes a `BorrowedFd`, instead of an `unsafe` block at
/// every syscall on a glommio file or socket.
pub fn borrowed_fd<T: AsRawFd + ?Sized>(owner: &T) -> BorrowedFd<'_> {
    // SAFETY: `owner` holds the descriptor open while it lives (glommio files and
    // sockets close it only on drop or through a method taking `self`), and the
    // returned borrow cannot outlive `&owner`.
    unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_descriptor_is_the_owners() {
        let file = tempfile::tempfile().unwrap();
        let fd = borrowed_fd(&file);
        assert_eq!(fd.as_raw_fd(), file.as_raw_fd());
        // A syscall through the borrow reaches the same open file.
        rustix::io::write(fd, b"abc").unwrap();
        assert_eq!(file.metadata().unwrap().len(), 3);
    }
}
