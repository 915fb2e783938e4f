//! Temporaries left behind by a target process that died (`kill -9`, a crash, power
//! loss) while files were under construction. A session that ends early removes its own
//! (see `TargetSession::abandon`); a dead process cannot, and a later pass removes them
//! only from the directories it lists. So the first time this process serves a root,
//! one background walk of it removes the temporaries of other processes (their names
//! carry the pid). Temporaries of files large enough to be checkpointed are named apart
//! (`ckpt.`) and spared: they are what a resumed transfer copies from, and go when their
//! file commits or a pass lists their directory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::checkpoint::CHECKPOINT_BYTES;
use xtsync_wire::RelPath;

use crate::fsops::{TargetRoot, TEMP_PREFIX};

/// Marks the temporaries of files that may be checkpointed (see the module comment).
const CHECKPOINTABLE_MARK: &str = "ckpt.";

/// The tag of a session's temporary names: `run.session.pid.seq` (`is_stale_temp`
/// reads the pid back).
pub(crate) fn session_tag(run_id: u64, session_index: u16, seq: u64) -> String {
    format!("{run_id}.{session_index}.{}.{seq}", std::process::id())
}

/// The temporary-name tag for a file of `size_bytes` from a session tagged `tag`.
pub(crate) fn temp_tag(tag: &str, size_bytes: u64) -> String {
    if size_bytes >= CHECKPOINT_BYTES {
        format!("{CHECKPOINTABLE_MARK}{tag}")
    } else {
        tag.to_string()
    }
}

/// True for a temporary of a dead process that no checkpoint may need: a name
/// `TEMP_PREFIX run.session.pid.…` whose pid is not `own_pid` and runs no process. Names
/// it cannot read are left alone.
pub(crate) fn is_stale_temp(name: &[u8], own_pid: u32) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX.as_bytes()) else { return false };
    if rest.starts_with(CHECKPOINTABLE_MARK.as_bytes()) {
        return false;
    }
    let pid = rest.split(|&b| b == b'.').nth(2).and_then(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok());
    // A live process of that pid may be another target serving the same root.
    pid.is_some_and(|pid| pid != own_pid && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Held while a directory's times are set: by the sweep from before it reads a
/// directory's times until it has put them back, and by a pass while it applies
/// directory metadata. Without it the sweep (idle priority, so it may wait long between
/// the two) could read a directory's times, let a pass set the source's, and then put
/// back the ones it had read: the directory kept the time a dead process's temporary
/// gave it (the crash test, under load: `big` newer at the target than at the source).
pub(crate) fn dir_times_lock() -> std::sync::MutexGuard<'static, ()> {
    static DIR_TIMES: Mutex<()> = Mutex::new(());
    DIR_TIMES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the sweep of `root` in a background thread, once per root per process.
pub(crate) fn sweep_once(root: &Arc<TargetRoot>) {
    static SWEPT: OnceLock<Mutex<HashSet<Vec<u8>>>> = OnceLock::new();
    let key = root.absolute(&RelPath::root());
    let first = SWEPT.get_or_init(Default::default).lock().map(|mut swept| swept.insert(key)).unwrap_or(false);
    if !first {
        return;
    }
    let root = root.clone();
    let spawned = std::thread::Builder::new().name("xtsync-sweep".into()).spawn(move || {
        // Housekeeping: it runs only on CPU time the sessions leave idle.
        idle_priority();
        let removed = sweep(&root, std::process::id());
        if removed > 0 {
            tracing::info!(removed, "removed temporaries left by an earlier target process");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the sweep of leftover temporaries");
    }
}

/// Puts the calling thread in the SCHED_IDLE class (logged if refused).
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sweep stays at normal priority");
    }
}

/// Walks the tree below `root` (every directory opened beneath it, never through a
/// symlink; one directory open at a time) and removes the stale temporaries; returns
/// how many.
fn sweep(root: &TargetRoot, own_pid: u32) -> u64 {
    let mut removed = 0;
    let mut stack: Vec<RelPath> = vec![RelPath::root()];
    while let Some(rel) = stack.pop() {
        let Ok(dir) = root.dir(&rel, false) else { continue };
        let Ok(dup) =
            rustix::fs::openat(&dir, ".", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        else {
            continue;
        };
        let Ok(entries) = rustix::fs::Dir::new(dup) else { continue };
        let mut stale: Vec<std::ffi::CString> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if entry.file_type() == FileType::Directory {
                if let Ok(sub) = rel.join(name) {
                    stack.push(sub);
                }
            } else if is_stale_temp(name, own_pid) {
                stale.push(entry.file_name().to_owned());
            }
        }
        if stale.is_empty() {
            continue;
        }
        // Removing a name changes the directory's times, which replicate: keep them.
        let _times_held = dir_times_lock();
        let times = rustix::fs::fstat(&dir).ok().map(|st| Timestamps {
            last_access: Timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec as _ },
            last_modification: Timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec as _ },
        });
        let removed_here =
            stale.iter().filter(|name| rustix::fs::unlinkat(&dir, name.as_c_str(), AtFlags::empty()).is_ok()).count()
                as u64;
        if let (true, Some(times)) = (removed_here > 0, &times) {
            let _ = rustix::fs::futimens(&dir, times);
        }
        removed += removed_here;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_processes_temporaries_that_no_checkpoint_needs_are_stale() {
        let own = 4242;
        assert!(is_stale_temp(b".xtsync-tmp.7.0.1234.3.17", own));
        assert!(!is_stale_temp(b".xtsync-tmp.7.0.4242.3.17", own), "this process's own");
        let live = std::process::id();
        assert!(!is_stale_temp(format!(".xtsync-tmp.7.0.{live}.3.17").as_bytes(), own), "a live process's");
        assert!(!is_stale_temp(b".xtsync-tmp.ckpt.7.0.1234.3.17", own), "a checkpointable file's");
        assert!(!is_stale_temp(b"file.txt", own));
        assert!(!is_stale_temp(b".xtsync-tmp.garbage", own), "a name it cannot read");
        assert_eq!(temp_tag("7.0.1234.3.17", 1 << 20), "7.0.1234.3.17");
        // This process's own names, as sessions make them, are never stale to it.
        let own_name = format!("{TEMP_PREFIX}{}.1", session_tag(7, 0, 3));
        assert!(!is_stale_temp(own_name.as_bytes(), std::process::id()));
        assert!(own_name.contains(&format!(".{}.", std::process::id())));
        assert_eq!(temp_tag("7.0.1234.3.17", CHECKPOINT_BYTES), "ckpt.7.0.1234.3.17");
    }

    #[test]
    fn the_walk_removes_stale_temporaries_at_every_depth_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        let stale = [".xtsync-tmp.1.0.99999999.0.1", "a/b/.xtsync-tmp.1.1.99999999.0.2"];
        let kept = [".xtsync-tmp.ckpt.1.0.99999999.0.3", "a/file", "a/b/other"];
        for p in stale.iter().chain(&kept) {
            std::fs::write(r.join(p), b"x").unwrap();
        }
        let own = format!("a/.xtsync-tmp.1.0.{}.0.4", std::process::id());
        std::fs::write(r.join(&own), b"x").unwrap();
        let root = TargetRoot::open(r).unwrap();
        assert_eq!(sweep(&root, std::process::id()), 2);
        for p in stale {
            assert!(!r.join(p).exists(), "{p} stayed");
        }
        for p in kept.iter().chain([&own.as_str()]) {
            assert!(r.join(p).exists(), "{p} went");
        }
    }

    fn mtime(p: &std::path::Path) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    /// A pass that sets a directory's times while the sweep works there wins: the sweep
    /// reads the times to put back only once the pass is done, and its removal does not
    /// show in them.
    #[test]
    fn directory_times_a_pass_sets_while_the_sweep_runs_are_the_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().to_path_buf();
        std::fs::create_dir_all(r.join("big")).unwrap();
        let temp = r.join("big/.xtsync-tmp.1.0.99999999.0.1");
        std::fs::write(&temp, b"x").unwrap();
        let root = TargetRoot::open(&r).unwrap();

        let pass = dir_times_lock();
        let sweeper = std::thread::spawn(move || sweep(&root, std::process::id()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(temp.exists(), "the sweep removed a name while a pass set directory times");
        // The pass sets the source's times (an hour ago) and lets go.
        let source_time = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::open(r.join("big")).unwrap().set_modified(source_time).unwrap();
        let set = mtime(&r.join("big"));
        drop(pass);
        assert_eq!(sweeper.join().unwrap(), 1);
        assert!(!temp.exists());
        assert_eq!(mtime(&r.join("big")), set, "the sweep put back other times than the pass set");
    }
}
