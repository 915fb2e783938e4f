//! Target role: accept sessions, assemble new file versions from local chunks and
//! received ones (each re-hashed), and make them durable before acknowledging.
//!
//! `session.rs` runs the ordered frame loop of one connection; `assemble.rs` holds the
//! files being built and `placement.rs` puts their chunks in place; `durability.rs` is
//! the fsync barrier that renames finished files into place in batches; `entries.rs` applies directories, symlinks, hard links
//! and deletions; `fsops.rs` is the openat2-based filesystem layer under all of them;
//! `checkpoint.rs` makes large files under construction resumable; `rename.rs` applies
//! renames announced by the source to the target's own copies; `admission.rs` decides
//! which peers may write where (agents: only their own job's target); `sweep.rs`
//! removes what a dead target process left under construction.

pub mod admission;
pub mod assemble;
pub mod basis;
pub mod basis_regions;
pub mod checkpoint;
pub mod durability;
pub mod entries;
pub mod fsops;
pub mod listener;
pub mod placement;
pub mod rename;
pub mod session;
pub mod sweep;
