//! Loopback ports for the daemons a test starts.

use std::sync::atomic::{AtomicU16, Ordering};

/// A port for a daemon of this test, free when picked. Not from the kernel's ephemeral
/// range (32768–60999 here), which every outgoing connection of the tests running
/// beside this one draws from (one took an agent's port in CI: "Address already in
/// use"), but from a block of 20 ports below it per test process (nextest runs each
/// test in a process of its own).
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = 10_000 + (std::process::id() % 1_000) as u16 * 20;
    for _ in 0..40 {
        let port = block + NEXT.fetch_add(1, Ordering::Relaxed) % 20;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
