//! Change capture for xtsync: which paths under a root changed, delivered in bounded
//! batches a few milliseconds after the change.
//!
//! Layers, from the kernel up:
//! - backends ([`Backend`]): fanotify with a filesystem mark and directory-entry events
//!   when running as root (no watch limit, no kernel memory per directory), inotify with
//!   one watch per directory otherwise;
//! - the coalescer ([`coalesce`], pure): deduplicates paths, pairs rename halves, lets a
//!   dirty subtree swallow the paths below it, closes a batch one window after its first
//!   event or at its size cap;
//! - the [`Watcher`]: one thread, poll(2) on the backend and a stop eventfd, batches out
//!   through a bounded channel.
//!
//! Events can be lost (queue overflow, watch limit, vanished directories); the layer never
//! hides that: it reports the affected subtree — or the whole root — as dirty, and the
//! consumer rescans it. A periodic reconciliation scan above this crate catches anything
//! else.

pub mod coalesce;
mod dir_resolver;
mod error;
mod event;
mod fanotify;
mod fanotify_records;
mod inotify;
mod source;
mod sys;
mod watch_table;
mod watcher;

pub use error::WatchError;
pub use event::{ChangeBatch, ChangeKind, Event, EventKind, Rename};
pub use watcher::{Backend, BackendChoice, WatchOptions, Watcher};
