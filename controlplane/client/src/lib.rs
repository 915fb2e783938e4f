//! The client of the coordinators' REST API that workers, agents and `xtsyncctl` share.
//!
//! It takes every coordinator's address and finds the leader itself: a request that
//! reaches a follower is sent again to the leader the follower names (421), a dead or
//! cut-off coordinator is skipped after a short connect timeout, and while an election
//! runs the request goes round the coordinators with a bounded backoff until its
//! deadline. Writes that must not be applied twice are re-sent only when the
//! coordinator surely did not apply them ([`Retry::Once`]).
//!
//! What it does not do: the typed endpoints (each caller wraps the paths it uses),
//! durable queues of writes (the worker keeps its unacknowledged catalog commits), or
//! certificate handling beyond taking a rustls configuration.
//!
//! The decisions are a pure planner ([`failover::Plan`], unit-tested); the HTTP driver
//! ([`Client`]) only sends, sleeps and classifies answers.

#![forbid(unsafe_code)]

mod client;
mod error;
pub mod failover;

pub use client::{Client, ClientOptions, Request, Retry, TlsSource};
pub use error::ClientError;
pub use reqwest::Method;
