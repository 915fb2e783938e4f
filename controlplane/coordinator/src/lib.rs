//! xtsync-coordinator: the control plane of xtsync.
//!
//! Coordinators replicate jobs, workers, runs and the catalog of file versions with
//! Raft (openraft, storage v2) on one RocksDB database per node, and serve the REST API
//! of `controlplane/api` (described in `openapi.yaml`).
//!
//! Layers, from the pure core out:
//! - [`state`]: commands, deterministic apply, queries, over a small key-value trait;
//! - [`assignments`], [`liveness`]: leader-only, in-memory scheduling state (pure);
//! - [`store`]: RocksDB log store, state machine and read access;
//! - [`network`]: Raft RPCs over HTTPS;
//! - [`coordinator`]: the service tying Raft and the in-memory state together;
//! - [`http`]: the axum REST API and who may call what ([`http::access`]);
//!   [`https`]: serving it over mutual TLS; [`metrics`]: Prometheus text;
//! - [`server`]: startup and shutdown, used by the binary; [`timing`]: the Raft and
//!   request timing that failover depends on.

#![forbid(unsafe_code)]

pub mod assignments;
pub mod coordinator;
pub mod error;
pub mod http;
pub mod https;
pub mod liveness;
pub mod metrics;
pub mod network;
pub mod raft_types;
pub mod server;
pub mod state;
pub mod store;
pub mod timing;
