//! What the watcher thread needs from a backend: a descriptor to poll and a way to turn
//! what is queued behind it into [`Event`]s.

use std::os::fd::BorrowedFd;

use crate::error::WatchError;
use crate::event::Event;

/// A kernel event source. Lives on the watcher thread only (hence `Send`, not `Sync`).
pub(crate) trait Source: Send {
    /// The descriptor that becomes readable when events are queued.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Reads a bounded amount of what is queued (a few buffers, so that a flood cannot keep
    /// the thread from closing batches) and hands each event to `sink`. Returns without
    /// blocking when nothing is queued. An error stops the watcher.
    fn read_events(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), WatchError>;
}

/// Bytes read from the kernel per read(2): room for ~2,000 short inotify events.
pub(crate) const READ_BUF_BYTES: usize = 64 * 1024;

/// Buffers read per [`Source::read_events`] call before the thread looks at its batches.
pub(crate) const READS_PER_WAKEUP_MAX: usize = 4;
