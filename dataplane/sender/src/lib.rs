//! The sender role of the data plane (a job's source side): walk the tree, stream what
//! the receiver lacks, and report what became durable there.
//!
//! What it does not do: TLS, frame I/O and shaping are `xtsync-link`'s; the receiving
//! side is `xtsync-receiver`; talking to the coordinator and starting executors is the
//! worker daemon's (`xtsync-worker`), which hands sessions to cores as [`CoreCommand`]s.
//! The job API, configuration and CLI keep the words source and target; sender and
//! receiver name the roles inside the data plane.
//!
//! A pass (`pass.rs`, on the control thread) starts the walk (`xtsync-walk`, which
//! hands each entry to a session) and one session per core (`session.rs`, on the
//! glommio executors). Each session owns one TLS connection to the receiver and its
//! state (`state.rs`); its producer sends entries and streams files (`stream.rs`,
//! segments held in `segment.rs`, read under a lease from `lease.rs` so that a file
//! being written is never sent as a version) while its reply handler (`replies.rs`)
//! answers the receiver's wants with chunk data and reports `events::SessionEvent`s to
//! the pass. The producer's and the reply handler's decisions are pure functions
//! (`producer_step.rs`, `want_plan.rs`). A continuous job (`continuous.rs`) watches the
//! tree after its first pass and replicates each batch of changes over one kept
//! session.
//!
//! Modules depend in one direction (no import circles): `segment`, `events` → `state`
//! → `stream` → `replies` → `session` → `pass` → `continuous`.

pub mod continuous;
pub mod events;
pub mod lease;
pub mod pass;
mod producer_step;
mod replies;
mod segment;
pub mod session;
pub mod state;
mod stream;
mod want_plan;

use events::SessionEvent;
use state::{PassFeed, SessionParams};

/// Sent from the control thread to one executor.
pub enum CoreCommand {
    /// A sender session: one pass per feed, until `passes` closes.
    StartSource { params: SessionParams, passes: flume::Receiver<PassFeed>, events: flume::Sender<SessionEvent> },
}
