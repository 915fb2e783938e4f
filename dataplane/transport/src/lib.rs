//! TLS for every xtsync connection and the cluster PKI behind it:
//!
//! - [`pki`]: the certificate authority of `xtsyncctl cert` (rcgen): CA, certificates
//!   with the role in the subject OU, an index of everything issued, a signed CRL;
//! - [`identity`]: a certificate's name and role (pure), role checks;
//! - [`tls`]: rustls server and client configurations (TLS 1.2/1.3, mTLS, CRL, role
//!   checked in the handshake);
//! - [`reload`]: configurations swapped when the files change or on SIGHUP.
//!
//! - [`ktls`]: the kernel TLS hand-off of a finished rustls session on a raw socket.
//!
//! No async runtime here: the worker and the coordinator wrap their own streams.

pub mod identity;
pub mod ktls;
pub mod pki;
pub mod reload;
pub mod tls;

pub use identity::{
    identity_of, not_after_unix, peer_identity, require_role, IdentityError, PeerIdentity, Role, RoleError,
};
pub use pki::{load_or_create_ca, CaFiles, CertAuthority, IssueRequest, NodeCertFiles, PkiError};
pub use reload::{LoadedTls, ReloadingTls};
pub use tls::{
    client_config, describe_tls_error, find_tls_error, server_config, PeerRefusal, TlsFiles, TlsPolicy, TlsSetupError,
};
