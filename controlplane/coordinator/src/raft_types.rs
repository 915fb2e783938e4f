//! The openraft type configuration of the coordinator group.

use std::io::Cursor;

use crate::state::{Command, Response};

/// Coordinator ids, as in `coordinators[].id` of the configuration.
pub type NodeId = u64;
/// A coordinator's address (`host:port` of its REST API, which also serves `/raft/*`).
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Raft types of the control plane: entries carry [`Command`]s, answer [`Response`]s,
    /// and snapshots are JSON in memory.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
