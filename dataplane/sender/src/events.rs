//! What a session tells its pass (`SessionEvent`), and a session's figures.

use xtsync_api::FileVersion;

use xtsync_walk::backlog::Backlog;

/// What a session did in a pass, summed over sessions for the pass's report.
#[derive(Debug, Default, Clone)]
pub struct SessionStats {
    pub files_transferred: u64,
    pub files_unchanged: u64,
    pub files_renamed: u64,
    pub files_failed: u64,
    pub bytes_read: u64,
    pub bytes_on_wire: u64,
    pub chunks_sent: u64,
    /// Chunks sent for file versions the target had acknowledged earlier.
    pub chunks_resent_acknowledged: u64,
    pub chunks_reused: u64,
    pub entries_deleted: u64,
    /// The first paths the target did not hold as the source has them (reconcile report).
    pub differed: Vec<String>,
    /// The first paths the target removed.
    pub removed: Vec<String>,
}

impl SessionStats {
    /// Adds to a bounded list of paths (`PASS_PATHS_LISTED_MAX`), once.
    pub(crate) fn list(paths: &mut Vec<String>, path: String) {
        if paths.len() < xtsync_api::PASS_PATHS_LISTED_MAX && !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// Adds another session's figures and paths.
    pub(crate) fn add(&mut self, s: &SessionStats) {
        self.files_transferred += s.files_transferred;
        self.files_unchanged += s.files_unchanged;
        self.files_renamed += s.files_renamed;
        self.files_failed += s.files_failed;
        self.bytes_read += s.bytes_read;
        self.bytes_on_wire += s.bytes_on_wire;
        self.chunks_sent += s.chunks_sent;
        self.chunks_resent_acknowledged += s.chunks_resent_acknowledged;
        self.chunks_reused += s.chunks_reused;
        self.entries_deleted += s.entries_deleted;
        for path in &s.differed {
            Self::list(&mut self.differed, path.clone());
        }
        for path in &s.removed {
            Self::list(&mut self.removed, path.clone());
        }
    }
}

/// What a session tells its pass.
#[derive(Debug)]
pub enum SessionEvent {
    Committed(FileVersion),
    /// Files of an entries batch the target already held as they are: settled.
    Unchanged(Backlog),
    FileFailed {
        path: String,
        error: String,
    },
    /// Every entry of this session is durable at the target (or failed).
    ContentDone {
        session: u16,
    },
    Finished {
        session: u16,
        stats: SessionStats,
    },
    Failed {
        session: u16,
        error: String,
    },
}

impl SessionEvent {
    /// The files and bytes this event settles at the target (durable there, or found
    /// identical): what leaves the pass's backlog.
    pub(crate) fn settles(&self) -> Backlog {
        match self {
            SessionEvent::Committed(v) => Backlog { files: 1, bytes: v.size },
            SessionEvent::Unchanged(b) => *b,
            _ => Backlog::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtsync_walk::backlog::{PassBacklog, SharedBacklog};

    #[test]
    fn a_pass_settles_committed_and_identical_files_and_keeps_failed_ones() {
        let mut pass = PassBacklog::default();
        pass.walked.add(Backlog { files: 4, bytes: 400 });
        let version = FileVersion {
            path: "done".into(),
            size: 100,
            mtime_ns: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            content_digest: String::new(),
        };
        pass.settle(SessionEvent::Committed(version).settles());
        pass.settle(SessionEvent::Unchanged(Backlog { files: 2, bytes: 250 }).settles());
        pass.settle(SessionEvent::FileFailed { path: "f".into(), error: "No space left on device".into() }.settles());
        assert_eq!(pass.pending(), Backlog { files: 1, bytes: 50 });
        // Before its walk, a pass stands for what its changes were stat'ed at.
        let estimated = PassBacklog::with_estimate(Backlog { files: 3, bytes: 30 });
        estimated.walked.add(Backlog { files: 1, bytes: 40 });
        assert_eq!(estimated.pending(), Backlog { files: 3, bytes: 40 });
        let shared = SharedBacklog::default();
        shared.add(Backlog { files: 1, bytes: 10 });
        shared.remove(Backlog { files: 2, bytes: 5 });
        assert_eq!(shared.get(), Backlog { files: 0, bytes: 5 });
    }
}
