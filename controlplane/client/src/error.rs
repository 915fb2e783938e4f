//! What a request to the coordinators can end in, besides its answer.

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No coordinator could be reached before the deadline.
    #[error("no coordinator reachable: {reasons}")]
    Unreachable {
        /// The last attempts, one per coordinator: `addr: why`.
        reasons: String,
        /// The last attempt failed in TLS (certificate refused, wrong CA…).
        tls: bool,
    },
    /// Coordinators answered, but none was a leader before the deadline.
    #[error("no coordinator leads (an election is running, or no majority is up): {0}")]
    NoLeader(String),
    /// The leader answered with this refusal (4xx) or failure.
    #[error("coordinator at {addr} answered {status}: {message}")]
    Status { addr: String, status: u16, message: String },
    /// A write that must not be applied twice was sent and its answer lost: it may or
    /// may not have taken effect. Read the state before trying again.
    #[error("no answer from coordinator at {addr} ({reason}): the request may or may not have been applied")]
    OutcomeUnknown { addr: String, reason: String },
    #[error("coordinator at {addr} answered {status} with a body this client cannot read: {reason}")]
    Decode { addr: String, status: u16, reason: String },
    #[error("cannot set up the coordinator client: {0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status the leader answered, if one did.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } | ClientError::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth trying again later: no leader was found, or it failed on its side; a
    /// refusal (4xx) or a broken local setup is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::NoLeader(_) | ClientError::OutcomeUnknown { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            ClientError::Decode { .. } | ClientError::Setup(_) => false,
        }
    }
}
