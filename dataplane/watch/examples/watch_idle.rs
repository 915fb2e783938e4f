//! Idle cost of watching a big tree: CPU share and memory of a Watcher while nothing under
//! its root changes (issue 3, figure 2: "≤ 1% of a core, memory stated per watched file").
//!
//! ```text
//! cargo run --release -p xtsync-watch --example watch_idle -- \
//!     [--dir /var/tmp/xtsync-watch-idle] [--files 100000] [--dirs 1000] \
//!     [--backend auto|fanotify|inotify] [--secs 10]
//! ```
//!
//! Builds the tree once (reused when present with the same shape), starts a Watcher, lets
//! it settle, then measures for `--secs`: the process's CPU time (getrusage, user+system)
//! and VmRSS before the watcher started and after the measurement. Only user-space memory
//! is visible: the kernel's per-watch memory (inotify marks, ~0.5-1 KiB per watched
//! directory) and fanotify's event queue are not counted, and the slab they live in is
//! merged with others here, so /proc/slabinfo cannot show them either. fanotify sees the
//! whole filesystem, so unrelated activity elsewhere on it (other builds, logs) is part of
//! its idle cost; `idle_batches` counts batches delivered while nothing under the root changed (it should
//! not).

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xtsync_watch::{BackendChoice, WatchOptions, Watcher};

struct Args {
    dir: PathBuf,
    files: usize,
    dirs: usize,
    backend: BackendChoice,
    secs: u64,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        dir: PathBuf::from("/var/tmp/xtsync-watch-idle"),
        files: 100_000,
        dirs: 1000,
        backend: BackendChoice::Auto,
        secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--files" => args.files = value.parse()?,
            "--dirs" => args.dirs = value.parse::<usize>()?.max(1),
            "--secs" => args.secs = value.parse()?,
            "--backend" => {
                args.backend = match value.as_str() {
                    "auto" => BackendChoice::Auto,
                    "fanotify" => BackendChoice::Fanotify,
                    "inotify" => BackendChoice::Inotify,
                    other => return Err(format!("unknown backend {other}: auto, fanotify or inotify").into()),
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// Creates `files` small files spread over `dirs` directories, unless a previous run
/// already did (a stamp file records the shape).
fn build_tree(root: &Path, files: usize, dirs: usize) -> Result<(), Box<dyn Error>> {
    let stamp = root.with_extension("shape");
    let shape = format!("{files} {dirs}\n");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(shape.as_str()) {
        return Ok(());
    }
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    let per_dir = files.div_ceil(dirs);
    for i in 0..files {
        let dir = root.join(format!("d{:04}", i / per_dir));
        if i % per_dir == 0 {
            fs::create_dir_all(&dir)?;
        }
        fs::write(dir.join(format!("f{i:06}")), b"x")?;
    }
    fs::write(stamp, shape)?;
    Ok(())
}

fn rss_bytes() -> Result<u64, Box<dyn Error>> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS in /proc/self/status")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("malformed VmRSS")?.parse()?;
    Ok(kib * 1024)
}

fn cpu_seconds() -> Result<f64, Box<dyn Error>> {
    // SAFETY: rusage is plain data, all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the live struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let started = Instant::now();
    build_tree(&args.dir, args.files, args.dirs)?;
    eprintln!("tree ready in {:.1} s", started.elapsed().as_secs_f64());

    let rss_before = rss_bytes()?;
    let setup_at = Instant::now();
    let watcher = Watcher::new(&args.dir, WatchOptions { backend: args.backend, ..WatchOptions::default() })?;
    let setup_secs = setup_at.elapsed().as_secs_f64();
    // Settle: let setup events (and anything in flight) pass before measuring.
    let mut idle_batches = 0u64;
    let settle_until = Instant::now() + Duration::from_secs(1);
    while let Some(left) = settle_until.checked_duration_since(Instant::now()) {
        let _ = watcher.batches().recv_timeout(left);
    }

    let cpu_before = cpu_seconds()?;
    let wall_at = Instant::now();
    let measure_until = wall_at + Duration::from_secs(args.secs);
    while let Some(left) = measure_until.checked_duration_since(Instant::now()) {
        if watcher.batches().recv_timeout(left).is_ok() {
            idle_batches += 1;
        }
    }
    let cpu_secs = cpu_seconds()? - cpu_before;
    let wall_secs = wall_at.elapsed().as_secs_f64();
    let rss_after = rss_bytes()?;
    let backend = watcher.backend().name();
    watcher.stop()?;

    let rss_delta_bytes = rss_after as i64 - rss_before as i64;
    println!(
        "watch-idle backend={backend} files={} dirs={} cpu_pct={:.3} rss_delta_bytes={rss_delta_bytes} \
         bytes_per_file={:.1} setup_secs={setup_secs:.3} idle_batches={idle_batches} (kernel memory not visible)",
        args.files,
        args.dirs,
        100.0 * cpu_secs / wall_secs,
        rss_delta_bytes as f64 / args.files.max(1) as f64,
    );
    Ok(())
}
