//! The receiver role of the data plane (a job's target side): accept sessions, assemble
//! new file versions from local chunks and received ones (each re-hashed), and make
//! them durable before acknowledging.
//!
//! What it does not do: TLS, frame I/O and liveness are `xtsync-link`'s; asking the
//! coordinator whether a peer may write is the worker's control thread
//! (`xtsync_worker::admissions`), reached through [`admission::Admission`].
//!
//! `session.rs` runs the ordered frame loop of one connection; what it does with a
//! segment or a file's end is decided by pure functions (`frame_plan.rs`).
//! `assemble.rs` holds the files being built and `placement.rs` puts their chunks in
//! place, copied from local files (`local_readers.rs`) or received, and rebuilt from
//! deltas (`basis.rs`, `basis_regions.rs`); `chunk_error.rs` says why a chunk could not
//! be placed. `durability.rs` is the fsync barrier that renames finished files into
//! place in batches; `entries.rs` applies directories, symlinks, hard links and
//! deletions; `fsops.rs` is the openat2-based filesystem layer under all of them;
//! `checkpoint.rs` makes large files under construction resumable; `rename.rs` applies
//! renames announced by the sender to the receiver's own copies; `admission.rs` decides
//! which peers may write where (agents: only their own job's target); `sweep.rs`
//! removes what a dead receiver process left under construction.

pub mod admission;
mod assemble;
mod basis;
mod basis_regions;
pub mod checkpoint;
mod chunk_error;
mod durability;
mod entries;
mod frame_plan;
mod fsops;
pub mod listener;
mod local_readers;
mod placement;
mod rename;
pub mod session;
mod sweep;
