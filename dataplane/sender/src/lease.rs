//! A read lease on a source file while it is read: a file being written is never sent
//! as a version.
//!
//! The stat before and after a read cannot see a writer stopped in the middle of a
//! `write(2)` (same size and times on both sides of the read), and the half-written
//! state would go out as a version that never existed. A read lease (`F_SETLEASE`,
//! `F_RDLCK`) is granted only while nobody has the file open for writing, and is broken
//! as soon as somebody opens it for writing: that writer's `open` waits until the lease
//! is given back, which the reader does at its next block, abandoning the read (the file
//! is read again later, as for any change during a read).
//!
//! A file that stays open for writing (a log, a database) gets no lease after a short
//! wait; it is then read as before, with the stat check only. Where leases are not
//! available (not the file's owner without `CAP_LEASE`, a filesystem without them),
//! likewise.

use std::os::fd::{AsRawFd, BorrowedFd};

/// What became of a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseRequest {
    /// Held: nobody has the file open for writing.
    Held,
    /// Somebody has the file open for writing now.
    OpenForWriting,
    /// Leases are not available here.
    Unavailable,
}

/// A lease break is announced by a signal (SIGIO), whose default action ends the
/// process: the worker notices breaks by asking (`broken`), so the signal is ignored.
/// Called once at start-up (and by tests that take leases).
pub fn ignore_break_signal() {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to be unsafe in.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
}

/// Asks for a read lease on `fd` (opened read-only).
pub(crate) fn request(fd: BorrowedFd<'_>) -> LeaseRequest {
    // SAFETY: plain fcntl on a descriptor that is open for this borrow.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) } == 0 {
        return LeaseRequest::Held;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => LeaseRequest::OpenForWriting,
        _ => LeaseRequest::Unavailable,
    }
}

/// True once somebody opened the file for writing (the break is pending: the lease
/// must be given back now).
pub(crate) fn broken(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: as above.
    let held = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) };
    held != libc::F_RDLCK
}

/// Gives the lease back (also done by closing the file).
pub(crate) fn release(fd: BorrowedFd<'_>) {
    // SAFETY: as above.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    #[test]
    fn a_lease_is_refused_while_the_file_is_open_for_writing_and_breaks_when_it_is_opened() {
        ignore_break_signal();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"version one").unwrap();

        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let reader = std::fs::File::open(&path).unwrap();
        if request(reader.as_fd()) == LeaseRequest::Unavailable {
            eprintln!("leases unavailable here (filesystem or privileges): nothing to test");
            return;
        }
        assert_eq!(request(reader.as_fd()), LeaseRequest::OpenForWriting, "a writer has it open");
        drop(writer);

        assert_eq!(request(reader.as_fd()), LeaseRequest::Held);
        assert!(!broken(reader.as_fd()));
        // A writer comes: its open waits for the lease, which is seen broken and given back.
        let opener = {
            let path = path.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let _w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                started.elapsed()
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !broken(reader.as_fd()) {
            assert!(Instant::now() < deadline, "the lease never broke");
            std::thread::sleep(Duration::from_millis(1));
        }
        release(reader.as_fd());
        let waited = opener.join().unwrap();
        assert!(waited < Duration::from_secs(10), "the writer waited for the lease: {waited:?}");
    }
}
