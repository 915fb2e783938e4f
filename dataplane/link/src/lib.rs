//! The data plane's link layer, shared by the sender and the receiver: the executors
//! and what one session's connection needs once TLS is set up.
//!
//! - `fd`: borrowed descriptors of glommio files and sockets.
//! - `runtime`: one pinned glommio executor per core, and the process limits they need.
//! - `secure`: a session's stream after the handshake, rustls or kernel TLS.
//! - `frames`, `writer`: frame I/O over that stream (the codec is `xtsync-wire`).
//! - `sendfile`: chunk bytes sent by the kernel from the source file (kTLS sessions).
//! - `liveness`: dead-peer detection on data sockets (a cut link ends a session).
//! - `shaping`: per-job bandwidth limit (token bucket, time-of-day schedule).
//!
//! What it does not do: decide what to send or how to store it (`xtsync-sender`,
//! `xtsync-receiver`), load certificates or verify peers (`xtsync-transport`).

pub mod fd;
pub mod frames;
pub mod liveness;
pub mod runtime;
pub mod secure;
pub mod sendfile;
pub mod shaping;
pub mod writer;
