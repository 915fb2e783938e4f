//! Starting and stopping the real daemons for the quickstart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A daemon started by the quickstart; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
}

impl Daemon {
    pub fn start(name: &str, binary: &Path, args: &[String], log_dir: &Path) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = spawn(binary, args, out)?;
        Ok(Daemon { name: name.into(), child, log, binary: binary.to_path_buf(), args: args.to_vec() })
    }

    /// Starts the daemon again (same arguments, log appended) if it has exited; returns
    /// how it exited.
    pub fn restart_if_exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(status) = self.child.try_wait()? else { return Ok(None) };
        let out =
            File::options().append(true).open(&self.log).with_context(|| format!("opening {}", self.log.display()))?;
        self.child = spawn(&self.binary, &self.args, out)?;
        Ok(Some(status))
    }
}

fn spawn(binary: &Path, args: &[String], out: File) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    // If xtsyncctl dies without running its destructors (SIGTERM, SIGKILL), the
    // kernel stops the daemons too instead of leaving them orphaned.
    // SAFETY: prctl is async-signal-safe and touches only the child being spawned.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

impl Daemon {
    /// Fails with the tail of its log if the daemon has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The daemon binaries installed next to this `xtsyncctl`.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating xtsyncctl")?;
    let path = exe.parent().map(|d| d.join(name)).context("xtsyncctl has no parent directory")?;
    if !path.exists() {
        bail!("{name} not found at {} (build the workspace: cargo build --release)", path.display());
    }
    Ok(path)
}
