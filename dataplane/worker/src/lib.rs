//! The worker daemon: starts the data plane and connects it to the control plane.
//!
//! - `daemon`: start-up shared by `xtsync-worker` and `xtsync-agent` (configuration,
//!   TLS, store, one executor per core, then the control thread).
//! - `cores`: what runs on each core (the receiver's listener, sender sessions).
//! - `control`: the tokio thread that talks to the coordinator and serves HTTP.
//! - `client`: the coordinator's REST API; `admissions`: answers the receivers'
//!   admission questions from the coordinator; `outbox`: catalog commits kept in the
//!   local store until the coordinators acknowledge them.
//!
//! What it does not do: the data-plane roles themselves (`xtsync-sender`,
//! `xtsync-receiver`) and their link layer (`xtsync-link`).

#![forbid(unsafe_code)]

pub mod admissions;
pub mod client;
pub mod control;
pub mod cores;
pub mod daemon;
pub mod outbox;
