//! Dead-peer detection on data-plane sockets. A cut link sends no reset: without these,
//! a session would wait for the kernel's retransmission limit (~15 minutes) before
//! failing. With them, unacknowledged data gives up after `PEER_TIMEOUT`, and an idle
//! kept session (a continuous job between changes) probes its peer.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// How long sent data may stay unacknowledged, or an idle peer silent, before the
/// connection is given up (and the session retried).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets `TCP_USER_TIMEOUT` and TCP keepalive (idle 10 s, then 5 probes 4 s apart).
/// Best effort: a refusal is logged, the session works without it.
pub fn watch_peer(socket: BorrowedFd<'_>) {
    let fd = socket.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int, what: &str| {
        // SAFETY: an int option on a socket descriptor we borrow for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!(option = what, error = %std::io::Error::last_os_error(), "socket option refused");
        }
    };
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, PEER_TIMEOUT.as_millis() as libc::c_int, "TCP_USER_TIMEOUT");
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10, "TCP_KEEPIDLE");
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 4, "TCP_KEEPINTVL");
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 5, "TCP_KEEPCNT");
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn int_option(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid out pointers for an int option.
        let r =
            unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(r, 0);
        value
    }

    #[test]
    fn a_data_socket_gives_up_on_a_silent_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        watch_peer(s.as_fd());
        assert_eq!(int_option(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 30_000);
        assert_eq!(int_option(s.as_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(int_option(s.as_fd(), libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 10);
    }
}
