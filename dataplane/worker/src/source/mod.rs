//! Source role: walk the tree, stream what the target lacks.
//!
//! A pass (`pass.rs`, on the control thread) starts the walk and one session per core
//! (`session.rs`, on the glommio executors). Each session owns one TLS connection to
//! the target; its producer sends entries and file manifests (`stream.rs`) while its
//! reply handler (`replies.rs`) answers the target's wants with chunk data.
//!
//! A continuous job (`continuous.rs`) watches the tree (`xtsync-watch`) after its first
//! pass and replicates each batch of changes (`changes.rs`) over one kept session.
//! `renames.rs` recognises files the source had at another path (events, inode,
//! content), which the target then renames instead of receiving. `backlog.rs` counts the
//! files and bytes not yet durable at the target (the "pending" beside the lag).
//! A one-shot job's pass walks only what its change journal (`journal.rs`, a watcher
//! the worker keeps between passes) recorded, when that journal can vouch for it.
//! `lease.rs` holds a read lease on each file while it is read, so that a file being
//! written is never sent as a version.

pub mod backlog;
pub mod changes;
pub mod continuous;
pub mod dir_queue;
pub mod entry_meta;
pub mod journal;
pub mod lease;
pub mod pass;
pub mod renames;
pub mod replies;
pub mod scan;
pub mod session;
pub mod stream;
pub mod synced;
