//! The register of every certificate a cluster CA issued (`index.json` beside the CA):
//! pure state and rules, no files. [`super::authority`] loads, changes and saves it.

use serde::{Deserialize, Serialize};

use crate::identity::Role;

/// Bumped when the layout changes; older versions are migrated on load.
pub const INDEX_FORMAT_VERSION: u32 = 1;
/// Certificate names end up in file names, log lines and worker names.
pub const NAME_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertIndex {
    pub format_version: u32,
    /// Cluster name written in the CA's subject.
    pub cluster: String,
    /// Number of the last CRL signed (monotonic, RFC 5280 `cRLNumber`).
    pub crl_number: u64,
    /// In issue order.
    pub certs: Vec<IssuedCert>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub name: String,
    pub role: Role,
    /// Lowercase hex without leading zero bytes.
    pub serial: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub sans: Vec<String>,
    pub issued_unix: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix: Option<i64>,
}

/// Where a certificate stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    Valid,
    NotYetValid,
    Expired,
    Revoked,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Valid => "valid",
            CertState::NotYetValid => "not yet valid",
            CertState::Expired => "expired",
            CertState::Revoked => "revoked",
        }
    }
}

impl IssuedCert {
    /// Revocation wins over the validity window.
    pub fn state(&self, now_unix: i64) -> CertState {
        if self.revoked_unix.is_some() {
            CertState::Revoked
        } else if now_unix < self.not_before_unix {
            CertState::NotYetValid
        } else if now_unix > self.not_after_unix {
            CertState::Expired
        } else {
            CertState::Valid
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// A name that cannot be a certificate name (also a file name).
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Neither a name nor a serial of an issued certificate.
    #[error("no certificate named or numbered {0:?} was issued by this CA (see `xtsyncctl cert list`)")]
    NotFound(String),
    /// Every certificate the argument designates is revoked already.
    #[error("{0:?} is already revoked")]
    AlreadyRevoked(String),
    /// Two certificates with one serial: the CA would be ambiguous in its CRL.
    #[error("serial {0} is already in the index")]
    DuplicateSerial(String),
    /// The validity window is empty.
    #[error("not_after must be later than not_before")]
    EmptyValidity,
    /// An index written by a newer xtsync.
    #[error("index format version {found} is newer than this xtsyncctl understands ({INDEX_FORMAT_VERSION})")]
    NewerFormat { found: u32 },
}

/// Names: 1..=64 of ASCII letters, digits, `.`, `-`, `_`, starting with a letter or
/// digit; `ca` is the authority's own file name.
pub fn validate_name(name: &str) -> Result<(), IndexError> {
    let invalid = |reason| Err(IndexError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return invalid("must be 1 to 64 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return invalid("only ASCII letters, digits, '.', '-' and '_' are allowed");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("must start with a letter or digit");
    }
    if name == "ca" {
        return invalid("`ca` is the authority's own certificate");
    }
    Ok(())
}

/// `0A:1b` and `0a1b` designate the same serial.
pub fn normalize_serial(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|&c| c != ':').collect::<String>().to_ascii_lowercase();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = hex.trim_start_matches('0');
    // Whole bytes, as hex_lower prints them.
    let padded = if trimmed.len() % 2 == 1 { format!("0{trimmed}") } else { trimmed.to_string() };
    Some(if padded.is_empty() { "00".into() } else { padded })
}

impl CertIndex {
    pub fn new(cluster: &str) -> CertIndex {
        CertIndex { format_version: INDEX_FORMAT_VERSION, cluster: cluster.to_string(), crl_number: 0, certs: vec![] }
    }

    /// Checks an index read from disk.
    pub fn check_version(&self) -> Result<(), IndexError> {
        if self.format_version > INDEX_FORMAT_VERSION {
            return Err(IndexError::NewerFormat { found: self.format_version });
        }
        Ok(())
    }

    /// Records a newly issued certificate; returns the serials of certificates of the
    /// same name that are still valid (they stay valid until revoked).
    pub fn record(&mut self, cert: IssuedCert, now_unix: i64) -> Result<Vec<String>, IndexError> {
        validate_name(&cert.name)?;
        if cert.not_after_unix <= cert.not_before_unix {
            return Err(IndexError::EmptyValidity);
        }
        if self.certs.iter().any(|c| c.serial == cert.serial) {
            return Err(IndexError::DuplicateSerial(cert.serial));
        }
        let still_valid = self
            .certs
            .iter()
            .filter(|c| c.name == cert.name && c.state(now_unix) == CertState::Valid)
            .map(|c| c.serial.clone())
            .collect();
        self.certs.push(cert);
        Ok(still_valid)
    }

    /// Indexes of the certificates `name_or_serial` designates: one serial, or every
    /// certificate of a name.
    fn select(&self, name_or_serial: &str) -> Result<Vec<usize>, IndexError> {
        let by_name: Vec<usize> = (0..self.certs.len()).filter(|&i| self.certs[i].name == name_or_serial).collect();
        if !by_name.is_empty() {
            return Ok(by_name);
        }
        let serial = normalize_serial(name_or_serial);
        let by_serial: Vec<usize> =
            (0..self.certs.len()).filter(|&i| Some(&self.certs[i].serial) == serial.as_ref()).collect();
        if by_serial.is_empty() {
            return Err(IndexError::NotFound(name_or_serial.to_string()));
        }
        Ok(by_serial)
    }

    /// Revokes one serial, or every unrevoked certificate of a name; the next CRL
    /// lists them. Returns the newly revoked certificates.
    pub fn revoke(&mut self, name_or_serial: &str, now_unix: i64) -> Result<Vec<IssuedCert>, IndexError> {
        let mut revoked = Vec::new();
        for i in self.select(name_or_serial)? {
            let cert = &mut self.certs[i];
            if cert.revoked_unix.is_none() {
                cert.revoked_unix = Some(now_unix);
                revoked.push(cert.clone());
            }
        }
        if revoked.is_empty() {
            return Err(IndexError::AlreadyRevoked(name_or_serial.to_string()));
        }
        Ok(revoked)
    }

    /// The certificates the CRL lists.
    pub fn revoked(&self) -> impl Iterator<Item = &IssuedCert> {
        self.certs.iter().filter(|c| c.revoked_unix.is_some())
    }

    /// The number the next CRL carries.
    pub fn next_crl_number(&mut self) -> u64 {
        self.crl_number += 1;
        self.crl_number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str, serial: &str, not_after: i64) -> IssuedCert {
        IssuedCert {
            name: name.into(),
            role: Role::Worker,
            serial: serial.into(),
            not_before_unix: 0,
            not_after_unix: not_after,
            sans: vec![],
            issued_unix: 0,
            revoked_unix: None,
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["worker-a", "dc1.host_2", "7"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", ".hidden", "a/b", "a b", "ca", &"x".repeat(65)] {
            assert!(matches!(validate_name(bad), Err(IndexError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn serials_are_normalized() {
        assert_eq!(normalize_serial("0A:1B").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("00a1b").as_deref(), Some("0a1b"));
        assert_eq!(normalize_serial("zz"), None);
    }

    #[test]
    fn states_follow_time_and_revocation() {
        let mut c = cert("w", "01", 100);
        c.not_before_unix = 10;
        assert_eq!(c.state(5), CertState::NotYetValid);
        assert_eq!(c.state(50), CertState::Valid);
        assert_eq!(c.state(101), CertState::Expired);
        c.revoked_unix = Some(60);
        assert_eq!(c.state(50), CertState::Revoked);
    }

    #[test]
    fn reissue_reports_the_still_valid_certificate_and_revoke_by_name_takes_all() {
        let mut idx = CertIndex::new("lab");
        assert!(idx.record(cert("w", "01", 100), 1).unwrap().is_empty());
        assert_eq!(idx.record(cert("w", "02", 100), 1).unwrap(), vec!["01".to_string()]);
        assert_eq!(idx.record(cert("x", "02", 100), 1), Err(IndexError::DuplicateSerial("02".into())));
        assert_eq!(idx.record(cert("x", "03", -1), 1), Err(IndexError::EmptyValidity));
        let revoked = idx.revoke("w", 5).unwrap();
        assert_eq!(revoked.len(), 2);
        assert_eq!(idx.revoke("w", 6), Err(IndexError::AlreadyRevoked("w".into())));
        assert_eq!(idx.revoked().count(), 2);
    }

    #[test]
    fn revoke_by_serial_takes_one() {
        let mut idx = CertIndex::new("lab");
        idx.record(cert("w", "0a01", 100), 1).unwrap();
        idx.record(cert("w", "0a02", 100), 1).unwrap();
        assert_eq!(idx.revoke("0A:02", 5).unwrap()[0].serial, "0a02");
        assert_eq!(idx.certs[0].state(5), CertState::Valid);
        assert_eq!(idx.revoke("nobody", 5), Err(IndexError::NotFound("nobody".into())));
        assert_eq!(idx.next_crl_number(), 1);
        assert_eq!(idx.next_crl_number(), 2);
    }

    #[test]
    fn a_newer_format_is_refused() {
        let mut idx = CertIndex::new("lab");
        idx.format_version = INDEX_FORMAT_VERSION + 1;
        assert!(matches!(idx.check_version(), Err(IndexError::NewerFormat { .. })));
    }
}
