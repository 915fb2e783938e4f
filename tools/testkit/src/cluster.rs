//! A cluster set up the operator's way, for tests that start daemons one by one: a CA
//! and certificates from `xtsyncctl cert`, the real `xtsync-coordinator`,
//! `xtsync-worker` and `xtsync-agent` binaries with their flags on loopback (one log
//! file each, appended across restarts), and `xtsyncctl` as admin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Lan;
use crate::xtsyncctl;

/// A daemon, killed (SIGKILL) on drop.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, as an operator stops it; SIGKILL after 10 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if it exited within `within`.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub use crate::bins::bin;
pub use crate::ports::free_port;

pub struct Cluster {
    pub dir: PathBuf,
    pub pki: PathBuf,
    pub logs: PathBuf,
    /// The first coordinator (the only one unless [`Cluster::on_lan`] made more).
    pub coordinator_addr: String,
    /// Every coordinator's REST address: clients are given all of them.
    pub coordinator_addrs: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// The port every coordinator of a [`Cluster::on_lan`] listens on (each in its host).
pub const LAN_COORDINATOR_PORT: u16 = 7400;

impl Cluster {
    /// A CA with certificates for the coordinator, `admin`, and the given workers and
    /// agents. `XTSYNC_TEST_KEEP=1` keeps the directory.
    pub fn new(workers: &[&str], agents: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let tmp = if std::env::var_os("XTSYNC_TEST_KEEP").is_some() {
            eprintln!("keeping {}", tmp.keep().display());
            None
        } else {
            Some(tmp)
        };
        let (pki, logs) = (dir.join("pki"), dir.join("logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let port = free_port();
        let coordinator_addr = format!("127.0.0.1:{port}");
        let coordinator_addrs = vec![coordinator_addr.clone()];
        let cluster = Cluster { dir, pki, logs, coordinator_addr, coordinator_addrs, _tmp: tmp };
        let pki_s = cluster.pki.to_str().unwrap().to_string();
        cluster.ctl_ok(&["cert", "init-ca", "--name", "agents-test", "--dir", &pki_s]);
        let mut certs = vec![("coordinator", "coordinator"), ("admin", "admin")];
        certs.extend(workers.iter().map(|w| ("worker", *w)));
        certs.extend(agents.iter().map(|a| ("agent", *a)));
        for (role, name) in certs {
            cluster.ctl_ok(&["cert", "issue", "--role", role, "--name", name, "--dir", &pki_s]);
        }
        cluster
    }

    /// The same, with one coordinator in each host of `lan` (certificates `coord-N`
    /// for node N, naming the host's address), started with [`Cluster::member`].
    pub fn on_lan(lan: &Lan, workers: &[&str]) -> Cluster {
        let mut cluster = Cluster::new(workers, &[]);
        let pki_s = cluster.pki.to_str().unwrap().to_string();
        cluster.coordinator_addrs.clear();
        let mut yaml = String::from("coordinators:\n");
        for i in 0..lan.len() {
            let host_ip = lan.host(i).ip.clone();
            let name = format!("coord-{}", i + 1);
            cluster.ctl_ok(&[
                "cert",
                "issue",
                "--role",
                "coordinator",
                "--name",
                &name,
                "--san",
                &host_ip,
                "--dir",
                &pki_s,
            ]);
            yaml.push_str(&format!("  - {{ id: {}, host: \"{host_ip}\", port: {LAN_COORDINATOR_PORT} }}\n", i + 1));
            cluster.coordinator_addrs.push(format!("{host_ip}:{LAN_COORDINATOR_PORT}"));
        }
        cluster.coordinator_addr = cluster.coordinator_addrs[0].clone();
        std::fs::write(cluster.dir.join("coordinators.yaml"), yaml).unwrap();
        cluster
    }

    /// Coordinator `node` (1-based) of an [`Cluster::on_lan`] cluster, in its host,
    /// with its own metadata directory; `init` forms the group from the config's list.
    pub fn member(&self, lan: &Lan, node: usize, init: bool) -> Daemon {
        let host = lan.host(node - 1);
        let mut c = lan.command(node - 1, &bin("xtsync-coordinator"));
        c.arg("--config")
            .arg(self.dir.join("coordinators.yaml"))
            .args(["--node-id", &node.to_string()])
            .args(["--http-listen", &format!("{}:{LAN_COORDINATOR_PORT}", host.ip)])
            .arg("--metadata-path")
            .arg(self.dir.join(format!("coordinator-{node}")))
            .args(self.tls(&format!("coord-{node}")));
        if init {
            c.arg("--init");
        }
        self.spawn(c, &format!("coordinator-{node}"))
    }

    /// `--coordinator ADDR` for every coordinator.
    pub fn coordinator_flags(&self) -> Vec<String> {
        self.coordinator_addrs.iter().flat_map(|a| ["--coordinator".to_string(), a.clone()]).collect()
    }

    fn ctl_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = xtsyncctl().args(args).output().unwrap();
        assert!(out.status.success(), "xtsyncctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    pub fn tls(&self, name: &str) -> Vec<String> {
        let f = |file: &str| self.pki.join(file).display().to_string();
        vec![
            "--tls-cert".into(),
            f(&format!("{name}.crt")),
            "--tls-key".into(),
            f(&format!("{name}.key")),
            "--tls-ca".into(),
            f("ca.crt"),
            "--tls-crl".into(),
            f("ca.crl"),
        ]
    }

    /// Starts `cmd` with its output appended to `logs/NAME.log`.
    pub fn spawn(&self, mut cmd: Command, name: &str) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name)).unwrap();
        Daemon(cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap())
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The coordinator (initialized on its first start; the same state on a restart).
    pub fn coordinator(&self) -> Daemon {
        let mut c = Command::new(bin("xtsync-coordinator"));
        c.args(["--http-listen", &self.coordinator_addr, "--init", "--metadata-path"])
            .arg(self.dir.join("coordinator"))
            .args(self.tls("coordinator"));
        self.spawn(c, "coordinator")
    }

    /// A worker with one core on fixed ports (a restart keeps its address).
    pub fn worker(&self, name: &str, data_port: u16, http_port: u16) -> Daemon {
        self.worker_with(name, data_port, http_port, &[])
    }

    /// `worker` with more flags (`--config FILE`, `--advertise ADDR`, ...).
    pub fn worker_with(&self, name: &str, data_port: u16, http_port: u16, extra: &[&str]) -> Daemon {
        let mut w = Command::new(bin("xtsync-worker"));
        w.args(["--name", name, "--site", "dc1", "--cores", "1"])
            .args(["--data-listen", &format!("127.0.0.1:{data_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(self.coordinator_flags())
            .arg("--metadata-path")
            .arg(self.dir.join(name))
            .args(self.tls(name))
            .args(extra);
        self.spawn(w, name)
    }

    /// `xtsync-agent MODE_ARGS...` as agent `name` (its certificate), with its local
    /// cache in `DIR/NAME`.
    pub fn agent(&self, name: &str, mode_args: &[&str]) -> Daemon {
        let mut a = Command::new(bin("xtsync-agent"));
        a.args(mode_args)
            .args(self.coordinator_flags())
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--metadata-path")
            .arg(self.dir.join(name))
            .args(self.tls(name));
        self.spawn(a, name)
    }

    /// `xtsyncctl` as admin against this cluster.
    pub fn admin(&self, args: &[&str]) -> Output {
        let f = |file: &str| self.pki.join(file).display().to_string();
        xtsyncctl()
            .args(self.coordinator_flags())
            .args(["--cert", &f("admin.crt"), "--key", &f("admin.key"), "--ca", &f("ca.crt")])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn admin_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.admin(args);
        assert!(out.status.success(), "xtsyncctl {args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.logs());
        out.stdout
    }

    /// `xtsyncctl --json status` (Null while the coordinator does not answer).
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.admin(&["--json", "status"]).stdout).unwrap_or_default()
    }

    /// Waits until every name is registered and alive.
    pub fn wait_alive(&self, names: &[&str]) {
        self.wait_until(Duration::from_secs(60), &format!("{names:?} registered and alive"), || {
            let status = self.status();
            let workers = status["workers"].as_array().cloned().unwrap_or_default();
            names.iter().all(|n| workers.iter().any(|w| w["registration"]["name"] == *n && w["alive"] == true))
        });
    }

    /// Polls `ok` every 50 ms until it holds; fails with the daemons' logs at the deadline.
    pub fn wait_until(&self, within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !ok() {
            assert!(Instant::now() < deadline, "not within {within:?}: {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `target` is `source` again (content, mode, owner, mtime, links).
    pub fn wait_same_tree(&self, source: &Path, target: &Path, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let differences = super::tree_differences(source, target);
            if differences.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become {} within {within:?}:\n{}\n{}",
                target.display(),
                source.display(),
                differences.join("\n"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every daemon's log.
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().filter(|l| !l.contains("openraft")).rev().take(30).collect();
                format!("--- {}\n{}", p.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
