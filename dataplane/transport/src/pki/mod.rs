//! The cluster certificate authority behind `xtsyncctl cert`: a pure index of issued
//! certificates ([`index`]) and the directory that holds CA, certificates and CRL
//! ([`authority`]).

pub mod authority;
pub mod index;

pub use authority::{
    load_or_create_ca, CaFiles, CertAuthority, IssueRequest, Issued, NodeCertFiles, PkiError, CA_DAYS,
    CERT_DAYS_DEFAULT,
};
pub use index::{normalize_serial, validate_name, CertIndex, CertState, IndexError, IssuedCert};
