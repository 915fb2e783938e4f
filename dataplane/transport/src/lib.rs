//! TLS for the data plane: rustls configurations with mutual authentication built from
//! PEM files named in the config, and a small certificate authority (rcgen) for the
//! quickstart and for `xtsyncctl cert` (a later issue extends it with roles and
//! revocation). No sockets here: the worker wraps its own streams (the hand-off point
//! to kernel TLS will sit beside `tls.rs`).

mod pki;
mod tls;

pub use pki::{issue_node_cert, load_or_create_ca, CaFiles, NodeCertFiles, PkiError, Role};
pub use tls::{client_config, server_config, TlsSetupError};
