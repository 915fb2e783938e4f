//! The few raw syscalls the watcher thread needs besides the backends' own: an eventfd to
//! stop it, poll on two descriptors, and non-blocking reads. Each `unsafe` block is here or
//! in a backend, next to the reason it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Turns a `-1` return into the current `errno`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor a syscall just returned.
pub(crate) fn owned_fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    // SAFETY: `fd` was just returned by the kernel, is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A path as a C string; a path with an interior NUL cannot name a file.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// An eventfd the owner writes to make the watcher thread return from poll.
#[derive(Debug)]
pub(crate) struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers.
        let fd = owned_fd(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        Ok(StopSignal { fd })
    }

    /// Wakes the thread; idempotent (the counter only grows).
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A failure (counter saturated) means it is
        // already signalled, which is all we want.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl StopSignal {
    /// Resets the counter (after a wake-up that was not a stop).
    pub(crate) fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = read_nonblocking(self.fd.as_fd(), &mut buf);
    }
}

impl AsFd for StopSignal {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Readiness of the two descriptors after [`poll_two`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    pub(crate) source: bool,
    pub(crate) stop: bool,
}

/// Waits until `source` (if `watch_source`) or `stop` is readable, or `timeout` passes
/// (`None` = no timeout). EINTR counts as a timeout: the caller loops anyway.
pub(crate) fn poll_two(
    source: BorrowedFd<'_>,
    watch_source: bool,
    stop: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let source_events = if watch_source { libc::POLLIN } else { 0 };
    let mut fds = [
        libc::pollfd { fd: source.as_raw_fd(), events: source_events, revents: 0 },
        libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let timeout_ms = timeout.map_or(-1, timeout_ms_ceil);
    // SAFETY: `fds` is a live array of two pollfd; the length passed matches.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    match cvt(ret) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(Ready { source: false, stop: false }),
        Err(err) => return Err(err),
    }
    let wake = libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    Ok(Ready { source: watch_source && fds[0].revents & wake != 0, stop: fds[1].revents & wake != 0 })
}

/// Rounds up so that a deadline 0.3 ms away does not become a busy loop of 0 ms polls.
fn timeout_ms_ceil(timeout: Duration) -> libc::c_int {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

/// Reads from a non-blocking descriptor: `Ok(None)` when nothing is queued.
pub(crate) fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is a live, writable slice of the length passed.
        let ret = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if ret >= 0 {
            return Ok(Some(ret as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms_ceil(Duration::ZERO), 0);
        assert_eq!(timeout_ms_ceil(Duration::from_micros(300)), 1);
        assert_eq!(timeout_ms_ceil(Duration::from_millis(20)), 20);
        assert_eq!(timeout_ms_ceil(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }

    #[test]
    fn stop_signal_wakes_poll() -> io::Result<()> {
        let stop = StopSignal::new()?;
        let other = StopSignal::new()?;
        let idle = poll_two(other.as_fd(), true, stop.as_fd(), Some(Duration::from_millis(1)))?;
        assert_eq!(idle, Ready { source: false, stop: false });
        stop.signal();
        let ready = poll_two(other.as_fd(), true, stop.as_fd(), Some(Duration::from_secs(5)))?;
        assert_eq!(ready, Ready { source: false, stop: true });
        Ok(())
    }
}
