//! `send-zc`: does io_uring's zero-copy send (SEND_ZC) pay, and above which payload
//! size? Sends the same bytes over one loopback TCP connection with IORING_OP_SEND
//! (copying), IORING_OP_SEND_ZC, and SEND_ZC from registered (fixed) buffers, for
//! payload sizes from 4 KiB to 1 MiB, up to 8 sends in flight; a plain reader thread
//! drains the other end. Prints, per mode and size, MB/s and the sending thread's CPU
//! seconds per GB. The data plane's choice (see `perf/RESULTS.md`) follows from it.
//!
//! ```text
//! send-zc [--mib-per-run N]
//! ```

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{bail, Context};
use io_uring::{cqueue, opcode, types, IoUring};

const IN_FLIGHT: usize = 8;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Send,
    SendZc,
    SendZcFixed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Send => "send",
            Mode::SendZc => "send_zc",
            Mode::SendZcFixed => "send_zc_fixed",
        }
    }
}

fn thread_cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given, which lives on this stack.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Sends `total` bytes in `size`-byte sends; returns (wall s, sender CPU s).
fn run(mode: Mode, size: usize, total: u64) -> anyhow::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let sender = TcpStream::connect(listener.local_addr()?)?;
    let (mut receiver, _) = listener.accept()?;
    sender.set_nodelay(true)?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = receiver.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let mut buffers: Vec<Vec<u8>> = (0..IN_FLIGHT).map(|i| xtsync_benches::random_bytes(size, i as u8)).collect();
    let mut ring = IoUring::new(64)?;
    if mode == Mode::SendZcFixed {
        let iovecs: Vec<libc::iovec> =
            buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        // SAFETY: the buffers outlive the ring (dropped after it at the end of this fn).
        unsafe { ring.submitter().register_buffers(&iovecs)? };
    }
    let fd = types::Fd(sender.as_raw_fd());
    let (cpu0, t0) = (thread_cpu_seconds(), Instant::now());
    // Per buffer: bytes of the current send still to go, and whether it is busy (for
    // zero-copy, until its notification arrives).
    let mut free: Vec<usize> = (0..IN_FLIGHT).collect();
    let mut queued = 0u64;
    let mut acked = 0u64;
    let mut busy = 0usize;
    let mut lens = [0u32; IN_FLIGHT];
    while acked < total {
        while let Some(i) = free.pop() {
            if queued >= total {
                free.push(i);
                break;
            }
            let len = (total - queued).min(size as u64) as u32;
            let ptr = buffers[i].as_ptr();
            let sqe = match mode {
                Mode::Send => opcode::Send::new(fd, ptr, len).build(),
                Mode::SendZc => opcode::SendZc::new(fd, ptr, len).build(),
                Mode::SendZcFixed => opcode::SendZc::new(fd, ptr, len).buf_index(Some(i as u16)).build(),
            }
            .user_data(i as u64);
            // SAFETY: the buffer stays alive and untouched until its completion (and, for
            // zero-copy, its notification).
            unsafe { ring.submission().push(&sqe).context("submission queue full")? };
            queued += len as u64;
            lens[i] = len;
            busy += 1;
        }
        ring.submit_and_wait(1)?;
        let completions: Vec<(u64, i32, u32)> =
            ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect();
        for (i, result, flags) in completions {
            if cqueue::notif(flags) {
                free.push(i as usize);
                busy -= 1;
                continue;
            }
            if result < 0 {
                bail!("{}: {}", mode.name(), std::io::Error::from_raw_os_error(-result));
            }
            // Sends in flight on one stream may complete short; the rest is sent again
            // (the bytes are random: only their count matters here).
            queued -= (lens[i as usize] - result as u32) as u64;
            acked += result as u64;
            if !cqueue::more(flags) {
                free.push(i as usize);
                busy -= 1;
            }
        }
    }
    while busy > 0 {
        ring.submit_and_wait(1)?;
        for c in ring.completion() {
            if cqueue::notif(c.flags()) || !cqueue::more(c.flags()) {
                busy -= 1;
            }
        }
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu0);
    drop(sender);
    let got = reader.join().expect("reader thread")?;
    if got != total {
        bail!("{}: receiver got {got} of {total} bytes", mode.name());
    }
    drop(ring);
    Ok((wall, cpu))
}

fn main() -> anyhow::Result<()> {
    let mut mib = 1024u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib-per-run" => mib = args.next().context("--mib-per-run N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    let total = mib << 20;
    for size in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        for mode in [Mode::Send, Mode::SendZc, Mode::SendZcFixed] {
            let (wall, cpu) = run(mode, size, total)?;
            let gb = total as f64 / 1e9;
            println!(
                "send-zc mode={} size_kib={} MB/s={:.0} sender_cpu_s_per_GB={:.3}",
                mode.name(),
                size >> 10,
                gb * 1e3 / wall,
                cpu / gb
            );
        }
    }
    Ok(())
}
