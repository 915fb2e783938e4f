//! The xtsync worker: the data plane. See `README.md` at the repository root for the
//! code map; in short:
//!
//! - `runtime`: one pinned glommio executor per core; `cores`: what runs on each.
//! - `source/`: the walk (`scan`), sessions that stream files (`session`, `stream`,
//!   `replies`) and the pass that drives them (`pass`).
//! - `target/`: sessions that assemble and commit files (`session`, `assemble`,
//!   `durability`, `entries`) over an openat2-confined filesystem layer (`fsops`).
//! - `secure`: a session's stream after the handshake, rustls or kernel TLS.
//! - `frames`, `writer`: frame I/O over a TLS stream; the codec is `xtsync-wire`.
//! - `sendfile`: chunk bytes sent by the kernel from the source file (kTLS sessions).
//! - `shaping`: per-job bandwidth limit (token bucket, time-of-day schedule).
//! - `liveness`: dead-peer detection on data sockets (a cut link ends a session).
//! - `control`: the tokio thread that talks to the coordinator and serves HTTP;
//!   `client`: the coordinator's REST API.
//! - `daemon`: start-up shared by `xtsync-worker` and `xtsync-agent`.

pub mod client;
pub mod control;
pub mod cores;
pub mod daemon;
pub mod frames;
pub mod histogram;
pub mod liveness;
pub mod metrics;
pub mod runtime;
pub mod secure;
pub mod sendfile;
pub mod shaping;
pub mod source;
pub mod target;
pub mod writer;
