//! Typed errors of the watch layer. Messages say what to do, not only what failed.

use std::io;
use std::path::PathBuf;

/// Why a [`crate::Watcher`] could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The root to watch does not exist (or cannot be resolved).
    #[error("watch root {path} cannot be resolved: {source} (create it first, or fix the job's root)")]
    RootMissing {
        /// The root as given.
        path: PathBuf,
        /// The error from resolving it.
        source: io::Error,
    },
    /// The root exists but is not a directory.
    #[error("watch root {path} is not a directory: only directory trees can be watched")]
    RootNotDirectory {
        /// The resolved root.
        path: PathBuf,
    },
    /// An option is out of range.
    #[error("invalid watch option {name}: {reason}")]
    InvalidOption {
        /// The option's name, as in the configuration.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// fanotify was requested explicitly and the kernel or our privileges refused it.
    #[error("fanotify refused for {path}: {reason} ({source}); use backend=inotify or run as root on Linux >= 5.9")]
    FanotifyRefused {
        /// The root the mark was for.
        path: PathBuf,
        /// Which step failed and the likely cause (EPERM: no CAP_SYS_ADMIN; EINVAL: kernel
        /// too old for FAN_REPORT_DFID_NAME; EXDEV/ENODEV: filesystem without file handles).
        reason: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// inotify could not be set up (instance limit, or the root's own watch failed).
    #[error("inotify setup failed for {path}: {reason} ({source})")]
    InotifySetup {
        /// The root.
        path: PathBuf,
        /// Which step failed and what to raise (`fs.inotify.max_user_instances`, ...).
        reason: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// A syscall the watcher's thread relies on failed; the watcher stopped.
    #[error("{op} failed: {source}")]
    Sys {
        /// The syscall or step.
        op: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// The watcher thread could not be started or panicked.
    #[error("watcher thread: {0}")]
    Thread(String),
}
