//! The sender's view of a tree: what a pass sends and why.
//!
//! - `scan`: the walk. Blocking threads list the tree (never following symlinks), read
//!   metadata and `user.*` xattrs, recognise hard links, skip what the receiver
//!   acknowledged as it is (`synced`), and hand each entry (`item::WalkItem`) to the
//!   session that owns it (sharded by path; all names of one inode go to one session).
//! - `changes`: the walk of only what changed (a batch of watcher events, or a change
//!   journal's record, `journal`), with `renames` recognising files the source had at
//!   another path (events, inode, content).
//! - `backlog`: the files and bytes handed out and not yet settled at the receiver (the
//!   "pending" beside the lag).
//! - `entry_meta`: an entry's stat, metadata and xattrs; `dir_queue`: the walk threads'
//!   shared stack of directories.
//!
//! What it does not do: open connections or read file contents (`xtsync-sender`
//! streams files; this crate only stats and lists). Modules depend in one direction:
//! `entry_meta`, `dir_queue`, `backlog` → `item` → `synced`, `renames` → `scan` →
//! `changes` → `journal`.

#![forbid(unsafe_code)]

pub mod backlog;
pub mod changes;
mod dir_queue;
pub mod entry_meta;
pub mod item;
pub mod journal;
pub mod renames;
pub mod scan;
pub mod synced;
