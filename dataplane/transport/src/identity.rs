//! Who a certificate speaks for: its subject CN is the component's name and its
//! subject OU the role (`coordinator`, `worker`, `agent`, `admin`). Pure: parses DER,
//! checks roles, no I/O.

use std::fmt;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

/// What a certificate allows its holder to be. One role per certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A member of the Raft group: serves the REST API, calls peers' `/raft/*`.
    Coordinator,
    /// A data-plane worker: registers, heartbeats, commits; serves the data port.
    Worker,
    /// An endpoint agent: may read only the jobs that name it.
    Agent,
    /// An operator (xtsyncctl): manages jobs and runs.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Coordinator, Role::Worker, Role::Agent, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Role, IdentityError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// The verified (or, in refusal messages, claimed) name and role of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub name: String,
    pub role: Role,
    /// Lowercase hex, as `xtsyncctl cert list` shows it.
    pub serial: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (role {}, serial {})", self.name, self.role, self.serial)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    /// The subject has no common name (CN) to take the component's name from.
    #[error("the certificate subject has no common name (CN)")]
    NoName,
    /// The subject has no organizational unit (OU), where xtsync writes the role.
    #[error("the certificate subject has no role (OU); issue it with `xtsyncctl cert issue --role`")]
    NoRole,
    /// More than one CN or OU: the identity could be read two ways.
    #[error("the certificate subject has {names} common names and {roles} organizational units; exactly one of each is accepted")]
    Ambiguous { names: usize, roles: usize },
    /// The OU is not one of the four roles.
    #[error("unknown role {0:?}: expected coordinator, worker, agent or admin")]
    UnknownRole(String),
}

/// A peer whose role is not accepted where it connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {identity} may not be used here: accepted roles are {}", roles_list(.accepted))]
pub struct RoleError {
    pub identity: PeerIdentity,
    pub accepted: &'static [Role],
}

pub(crate) fn roles_list(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

/// Reads name, role and serial from a certificate (does not verify it).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let subject = parsed.subject();
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().map(str::to_string);
    // Exactly one CN and one OU: the OU is the whole authorization, so a subject that
    // could be read two ways is refused rather than read by its first value.
    let names: Vec<_> = subject.iter_common_name().collect();
    let roles: Vec<_> = subject.iter_organizational_unit().collect();
    if names.len() > 1 || roles.len() > 1 {
        return Err(IdentityError::Ambiguous { names: names.len(), roles: roles.len() });
    }
    let name = names.first().and_then(|a| text(a).ok()).ok_or(IdentityError::NoName)?;
    let role = roles.first().ok_or(IdentityError::NoRole)?;
    let role: Role = text(role).map_err(|_| IdentityError::NoRole)?.parse()?;
    Ok(PeerIdentity { name, role, serial: hex_lower(parsed.raw_serial()) })
}

/// The end of a certificate's validity, in seconds since the Unix epoch.
pub fn not_after_unix(cert: &CertificateDer<'_>) -> Result<i64, IdentityError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| IdentityError::Parse(e.to_string()))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The identity of the peer of an established connection: the first certificate of
/// the chain rustls verified (`Connection::peer_certificates`).
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<PeerIdentity, IdentityError> {
    match chain.and_then(|c| c.first()) {
        Some(leaf) => identity_of(leaf),
        None => Err(IdentityError::Parse("the peer presented no certificate".into())),
    }
}

/// Refuses a role that is not in `accepted`.
pub fn require_role(identity: &PeerIdentity, accepted: &'static [Role]) -> Result<(), RoleError> {
    if accepted.contains(&identity.role) {
        Ok(())
    } else {
        Err(RoleError { identity: identity.clone(), accepted })
    }
}

/// Serial numbers are compared as lowercase hex without leading zero bytes.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert_eq!("root".parse::<Role>().unwrap_err(), IdentityError::UnknownRole("root".into()));
    }

    #[test]
    fn role_check_names_the_peer_and_the_accepted_roles() {
        let id = PeerIdentity { name: "ops".into(), role: Role::Admin, serial: "0a".into() };
        require_role(&id, &[Role::Admin, Role::Agent]).unwrap();
        let e = require_role(&id, &[Role::Worker]).unwrap_err().to_string();
        assert_eq!(e, "certificate ops (role admin, serial 0a) may not be used here: accepted roles are worker");
    }

    #[test]
    fn a_subject_with_two_roles_is_refused() {
        let cert = |second_ou: bool| {
            let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, "sneaky");
            dn.push(rcgen::DnType::OrganizationalUnitName, "worker");
            if second_ou {
                // The OU's OID (2.5.4.11) under another key: a second OU attribute.
                dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), "admin");
            }
            params.distinguished_name = dn;
            params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap()
        };
        assert_eq!(identity_of(cert(false).der()).unwrap().role, Role::Worker);
        assert_eq!(identity_of(cert(true).der()), Err(IdentityError::Ambiguous { names: 1, roles: 2 }));
    }

    #[test]
    fn garbage_is_not_an_identity() {
        assert!(matches!(identity_of(&CertificateDer::from(vec![1, 2, 3])), Err(IdentityError::Parse(_))));
        assert!(peer_identity(None).is_err());
    }

    #[test]
    fn hex_drops_leading_zero_bytes() {
        assert_eq!(hex_lower(&[0, 0x0a, 0xff]), "0aff");
        assert_eq!(hex_lower(&[0]), "00");
    }
}
