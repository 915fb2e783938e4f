//! Certificates that change without a restart: [`ReloadingTls`] holds the current
//! server and client configurations and swaps them when one of the PEM files changes
//! (checked every [`POLL_INTERVAL`]) or when the daemon calls [`ReloadingTls::reload`]
//! (on SIGHUP). New connections take [`ReloadingTls::current`]; established ones keep
//! the configuration they were made with. A reload that fails keeps the old
//! configuration and logs why.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};

use crate::identity::{identity_of, PeerIdentity};
use crate::tls::{client_config, revoked_serials, server_config, TlsFiles, TlsPolicy, TlsSetupError};

/// How often the files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One generation of configurations, built from one reading of the files.
#[derive(Debug)]
pub struct LoadedTls {
    /// Accepts the policy's `server_accepts` roles.
    pub server: Arc<ServerConfig>,
    /// Accepts servers of the policy's `client_expects` roles.
    pub client: Arc<ClientConfig>,
    /// Accepts coordinators only: for the REST clients of every component.
    pub coordinator_client: Arc<ClientConfig>,
    /// Our own certificate's name, role and serial.
    pub own: PeerIdentity,
    /// 1 for the first load, +1 for every successful reload.
    pub generation: u64,
    /// Serials revoked by the CRL of this generation: a server checks the peers of its
    /// kept-alive connections against it on every request.
    pub revoked_serials: std::collections::HashSet<String>,
}

/// What identifies a version of a file: replacing or rewriting it changes one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

/// One entry per file; `None` for a file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<FileStamp>>);

fn stamp(files: &TlsFiles) -> Stamp {
    Stamp(
        files
            .paths()
            .iter()
            .map(|p| {
                std::fs::metadata(p).ok().map(|m| FileStamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    size: m.size(),
                })
            })
            .collect(),
    )
}

struct Inner {
    files: TlsFiles,
    policy: TlsPolicy,
    current: RwLock<Arc<LoadedTls>>,
    /// The files as they were when last read (successfully or not).
    seen: Mutex<Stamp>,
    watching: AtomicBool,
}

/// Shared by every thread of a daemon; cheap to clone.
#[derive(Clone)]
pub struct ReloadingTls {
    inner: Arc<Inner>,
}

fn build(files: &TlsFiles, policy: &TlsPolicy, generation: u64) -> Result<LoadedTls, TlsSetupError> {
    let server = server_config(files, policy)?;
    let client = client_config(files, policy)?;
    let coordinator_client = client_config(files, &policy.to_coordinator())?;
    let pem = std::fs::read(&files.cert)
        .map_err(|e| TlsSetupError::File { path: files.cert.display().to_string(), reason: e.to_string() })?;
    let own = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .and_then(Result::ok)
        .and_then(|c| identity_of(&c).ok())
        .ok_or_else(|| TlsSetupError::OwnCertificate {
            path: files.cert.display().to_string(),
            reason: "changed while being read".into(),
        })?;
    let revoked_serials = revoked_serials(files.crl.as_deref())?;
    Ok(LoadedTls { server, client, coordinator_client, own, generation, revoked_serials })
}

impl ReloadingTls {
    /// Loads the files once; fails if they do not make a valid configuration.
    pub fn load(files: TlsFiles, policy: TlsPolicy) -> Result<ReloadingTls, TlsSetupError> {
        let seen = stamp(&files);
        let loaded = build(&files, &policy, 1)?;
        Ok(ReloadingTls {
            inner: Arc::new(Inner {
                files,
                policy,
                current: RwLock::new(Arc::new(loaded)),
                seen: Mutex::new(seen),
                watching: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<LoadedTls> {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Reads the files again and swaps the configuration; on error the old one stays.
    pub fn reload(&self) -> Result<Arc<LoadedTls>, TlsSetupError> {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Stamped before reading: a write that lands while we read changes the stamp
        // again and is picked up by the next poll.
        *seen = stamp(&self.inner.files);
        let generation = self.current().generation + 1;
        let loaded = Arc::new(build(&self.inner.files, &self.inner.policy, generation)?);
        *self.inner.current.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        Ok(loaded)
    }

    /// Reloads if a file changed since it was last read. `None`: nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<LoadedTls>, TlsSetupError>> {
        let changed = *self.inner.seen.lock().unwrap_or_else(|p| p.into_inner()) != stamp(&self.inner.files);
        changed.then(|| self.reload())
    }

    /// Reloads and logs the outcome (`why`: "SIGHUP", "file change").
    pub fn reload_logged(&self, why: &str) {
        log_outcome(why, self.reload());
    }

    /// Starts the thread that polls the files (once per holder; later calls do nothing).
    pub fn watch(&self) {
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("tls-reload".into()).spawn(move || loop {
            std::thread::sleep(POLL_INTERVAL);
            if let Some(outcome) = me.reload_if_changed() {
                log_outcome("file change", outcome);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the certificate reload thread; reload with SIGHUP only");
        }
    }
}

fn log_outcome(why: &str, outcome: Result<Arc<LoadedTls>, TlsSetupError>) {
    match outcome {
        Ok(l) => tracing::info!(
            trigger = why,
            own = %l.own,
            generation = l.generation,
            "TLS configuration reloaded: new connections use the new certificates and CRL"
        ),
        Err(e) => tracing::error!(
            trigger = why,
            error = %e,
            "TLS configuration reload failed: keeping the previous certificates and CRL"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use crate::pki::{CertAuthority, IssueRequest};

    #[test]
    fn changes_are_picked_up_and_bad_files_keep_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::open_or_init(dir.path(), "t").unwrap();
        let first = ca.issue(&IssueRequest::for_days("w", Role::Worker, 1)).unwrap();
        let files = TlsFiles {
            cert: first.files.cert_path.clone(),
            key: first.files.key_path.clone(),
            ca: ca.ca_files().cert_path,
            crl: Some(ca.ca_files().crl_path),
        };
        let tls = ReloadingTls::load(files, TlsPolicy::WORKER).unwrap();
        assert_eq!(tls.current().own.serial, first.cert.serial);
        assert!(tls.reload_if_changed().is_none());

        let second = ca.issue(&IssueRequest::for_days("w", Role::Worker, 1)).unwrap();
        let loaded = tls.reload_if_changed().expect("changed").unwrap();
        assert_eq!((loaded.own.serial.as_str(), loaded.generation), (second.cert.serial.as_str(), 2));

        std::fs::write(&second.files.cert_path, "garbage").unwrap();
        assert!(tls.reload_if_changed().expect("changed").is_err());
        assert_eq!(tls.current().own.serial, second.cert.serial, "the old configuration stays");
        assert!(tls.reload_if_changed().is_none(), "a bad file is not retried until it changes");
    }
}
