//! TLS for the data plane: rustls configurations with mutual authentication built from
//! PEM files named in the config, and a small certificate authority (rcgen) for the
//! quickstart and for `xtsyncctl cert` (a later issue extends it with roles and
//! revocation). No async runtime here: the worker wraps its own streams; `ktls` hands a
//! finished rustls session to the kernel on a raw socket.

pub mod ktls;
mod pki;
mod tls;

pub use pki::{issue_node_cert, load_or_create_ca, CaFiles, NodeCertFiles, PkiError, Role};
pub use tls::{client_config, server_config, TlsSetupError};
