//! Chunk bytes the kernel sends straight from the source file (`sendfile`) on a socket
//! whose TLS records the kernel encrypts (kTLS): page cache → kernel TLS → wire, with no
//! copy through user space. Runs on a blocking thread: glommio's sockets are
//! non-blocking, so a full send buffer is waited for with `poll`.
//!
//! Frame bytes around the file ranges (headers, trailers) go with `MSG_MORE`, so the
//! kernel packs them into the same TLS record as the chunk that follows.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// How long a send may wait for room in the socket's buffer before the session is
/// given up (the peer stopped reading).
pub const SEND_STALL_LIMIT: Duration = Duration::from_secs(300);

/// One piece of what goes on the socket, in order.
pub enum Part {
    Bytes(Vec<u8>),
    File(FileRange),
}

impl Part {
    /// Bytes this part puts on the socket.
    pub fn bytes(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.bytes as u64,
        }
    }
}

/// Bytes of an open source file, sent by the kernel.
pub struct FileRange {
    pub file: Arc<OwnedFd>,
    pub offset: u64,
    pub bytes: u32,
}

/// What `send_parts` put on the socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub bytes_total: u64,
    /// Bytes the kernel took from files.
    pub bytes_from_file: u64,
    /// Zero bytes sent in place of a file range that ended early (the file shrank after
    /// it was hashed): the frame stays well formed and the receiver's hash check fails
    /// it, so the file is sent again.
    pub bytes_padded: u64,
}

/// Writes `parts` to `socket` in order. Blocks; call it off the executor.
pub fn send_parts(socket: BorrowedFd<'_>, parts: &[Part], stall_limit: Duration) -> io::Result<Sent> {
    let mut sent = Sent::default();
    for (i, part) in parts.iter().enumerate() {
        let more = i + 1 < parts.len();
        match part {
            Part::Bytes(b) => send_all(socket, b, more, stall_limit)?,
            Part::File(r) => {
                let from_file = sendfile_range(socket, r, stall_limit)?;
                sent.bytes_from_file += from_file;
                let short = r.bytes as u64 - from_file;
                if short > 0 {
                    tracing::debug!(offset = r.offset, short, "source file ended early: padding the chunk");
                    send_all(socket, &vec![0u8; short as usize], more, stall_limit)?;
                    sent.bytes_padded += short;
                }
            }
        }
    }
    sent.bytes_total = parts.iter().map(Part::bytes).sum();
    Ok(sent)
}

fn send_all(socket: BorrowedFd<'_>, mut bytes: &[u8], more: bool, stall_limit: Duration) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid slice for the call; the descriptor is borrowed.
        let n = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), flags) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        wait_or_fail(socket, io::Error::last_os_error(), stall_limit)?;
    }
    Ok(())
}

/// Sends the range; returns how many bytes the file gave (fewer if it ended early or
/// could not be read).
fn sendfile_range(socket: BorrowedFd<'_>, range: &FileRange, stall_limit: Duration) -> io::Result<u64> {
    let mut offset = range.offset as libc::off_t;
    let end = range.offset + range.bytes as u64;
    while (offset as u64) < end {
        let left = (end - offset as u64) as usize;
        // SAFETY: both descriptors are borrowed for the call; `offset` is a valid
        // pointer the kernel advances.
        let n = unsafe { libc::sendfile(socket.as_raw_fd(), range.file.as_raw_fd(), &mut offset, left) };
        match n {
            0 => break,
            n if n > 0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if file_side_refusal(&e) {
                    // This file cannot be spliced (its filesystem) or read: copy what can
                    // be read; the caller pads the rest.
                    tracing::debug!(error = %e, "sendfile refused: copying the range");
                    let at = offset as u64;
                    return Ok(at - range.offset + copy_range(socket, range, at, end, stall_limit)?);
                }
                wait_or_fail(socket, e, stall_limit)?
            }
        }
    }
    Ok(offset as u64 - range.offset)
}

/// Errors of `sendfile` that come from the file, not the socket.
fn file_side_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EIO | libc::ESPIPE))
}

/// Reads `at..end` of the file and sends it; returns the bytes read (fewer if the file
/// ended or a read failed: the receiver's hash check fails the chunk).
fn copy_range(
    socket: BorrowedFd<'_>,
    range: &FileRange,
    mut at: u64,
    end: u64,
    stall_limit: Duration,
) -> io::Result<u64> {
    let start = at;
    let mut buf = vec![0u8; (end - at).min(1 << 20) as usize];
    while at < end {
        let want = (end - at).min(buf.len() as u64) as usize;
        // SAFETY: `buf` has room for `want` bytes; the descriptor is borrowed.
        let n = unsafe { libc::pread(range.file.as_raw_fd(), buf.as_mut_ptr().cast(), want, at as libc::off_t) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 {
                tracing::warn!(error = %io::Error::last_os_error(), "cannot read the source file to send a chunk");
            }
            break;
        }
        send_all(socket, &buf[..n as usize], true, stall_limit)?;
        at += n as u64;
    }
    Ok(at - start)
}

/// Returns once the socket can take more after `EAGAIN` (or at once after `EINTR`);
/// any other error is the session's end.
fn wait_or_fail(socket: BorrowedFd<'_>, error: io::Error, stall_limit: Duration) -> io::Result<()> {
    match error.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock => {
            let mut pfd = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            let timeout_ms = stall_limit.as_millis().min(i32::MAX as u128) as i32;
            loop {
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
                if r > 0 {
                    return Ok(());
                }
                if r == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the peer took nothing for {stall_limit:?}"),
                    ));
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, FromRawFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<OwnedFd>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let fd = Arc::new(OwnedFd::from(f.reopen().unwrap()));
        (f, fd)
    }

    /// Sends on a non-blocking socket with a small buffer (so `EAGAIN` and `poll` are
    /// exercised) while a slow reader drains it; returns what the reader got.
    fn send_and_read(parts: Vec<Part>) -> (Sent, Vec<u8>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                std::thread::sleep(Duration::from_micros(200));
                match b.read(&mut buf).unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let sent = send_parts(a.as_fd(), &parts, Duration::from_secs(10)).unwrap();
        drop(a);
        (sent, reader.join().unwrap())
    }

    #[test]
    fn bytes_and_file_ranges_arrive_in_order() {
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let (_keep, fd) = file_with(&content);
        let parts = vec![
            Part::Bytes(b"head".to_vec()),
            Part::File(FileRange { file: fd.clone(), offset: 1000, bytes: 2_000_000 }),
            Part::Bytes(b"middle".to_vec()),
            Part::File(FileRange { file: fd, offset: 0, bytes: 10 }),
            Part::Bytes(b"tail".to_vec()),
        ];
        let (sent, got) = send_and_read(parts);
        let want = [b"head", &content[1000..2_001_000], b"middle", &content[..10], b"tail"].concat();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the stream differs from the parts in order");
        assert_eq!(sent, Sent { bytes_total: want.len() as u64, bytes_from_file: 2_000_010, bytes_padded: 0 });
    }

    #[test]
    fn a_file_that_shrank_is_padded_so_the_frame_keeps_its_length() {
        let (_keep, fd) = file_with(&[9u8; 100]);
        let parts = vec![Part::File(FileRange { file: fd, offset: 60, bytes: 80 }), Part::Bytes(b"next".to_vec())];
        let (sent, got) = send_and_read(parts);
        assert_eq!(got, [&[9u8; 40][..], &[0u8; 40][..], b"next"].concat());
        assert_eq!((sent.bytes_from_file, sent.bytes_padded, sent.bytes_total), (40, 40, 84));
    }

    #[test]
    fn a_descriptor_the_kernel_cannot_splice_from_is_copied_or_padded_not_fatal() {
        // A pipe: sendfile refuses it (EINVAL) and it cannot be read at an offset
        // either, so the range is padded and the stream stays well formed.
        let (r, _w) = pipe();
        let parts = vec![
            Part::Bytes(b"<".to_vec()),
            Part::File(FileRange { file: Arc::new(r), offset: 0, bytes: 5 }),
            Part::Bytes(b">".to_vec()),
        ];
        let (sent, got) = send_and_read(parts);
        assert_eq!(got, b"<\0\0\0\0\0>");
        assert_eq!((sent.bytes_from_file, sent.bytes_padded), (0, 5));
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_peer_that_went_away_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        drop(b);
        let err = send_parts(a.as_fd(), &[Part::Bytes(vec![1; 10])], Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_peer_that_stops_reading_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let err = send_parts(a.as_fd(), &[Part::Bytes(vec![1; 8 << 20])], Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
