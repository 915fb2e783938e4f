//! A cluster certificate authority in a directory:
//!
//! ```text
//! ca.crt  ca.key (0600)   the authority (ECDSA P-256, 10 years)
//! ca.crl                  the revocation list, signed again on every change
//! index.json              every certificate issued (see `index.rs`)
//! NAME.crt  NAME.key      the certificates issued, one pair per name
//! .lock                   held (flock) while the directory changes
//! ```
//!
//! The rules live in [`super::index`]; this module reads, signs and writes files.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::index::{normalize_serial, validate_name, CertIndex, IndexError, IssuedCert};
use crate::identity::{identity_of, Role};

/// Validity of a new CA.
pub const CA_DAYS: i64 = 3650;
/// Validity of a certificate unless `--days` says otherwise.
pub const CERT_DAYS_DEFAULT: u32 = 365;
/// How far back `not_before` is set, for clocks slightly behind the CA's.
const CLOCK_SKEW: Duration = Duration::minutes(5);
/// nextUpdate of every CRL. xtsync does not enforce it (an old CRL must never lock a
/// cluster out); other TLS clients may.
const CRL_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file of the CA directory failed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// `init-ca` was not run in this directory.
    #[error("no certificate authority in {dir} (create one with `xtsyncctl cert init-ca --dir {dir}`)")]
    NotInitialized { dir: String },
    /// `init-ca` on a directory that has a CA already: it would orphan every certificate.
    #[error("{dir} already holds a certificate authority (ca.crt); refusing to replace it")]
    AlreadyInitialized { dir: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// `index.json` is not what xtsync writes.
    #[error("{path}: unreadable certificate index: {reason}")]
    IndexCorrupt { path: String, reason: String },
    /// A certificate rcgen produced could not be read back (a bug).
    #[error("issued certificate cannot be read back: {0}")]
    ReadBack(String),
}

#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub crl_path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NodeCertFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// What `cert issue` asks for.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub name: String,
    pub role: Role,
    /// Extra subject alternative names (DNS names or IP addresses); the name itself,
    /// `localhost` and 127.0.0.1 are always included.
    pub sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl IssueRequest {
    /// Valid from now (minus a little clock skew) for `days`.
    pub fn for_days(name: &str, role: Role, days: u32) -> IssueRequest {
        let now = OffsetDateTime::now_utc();
        IssueRequest {
            name: name.into(),
            role,
            sans: vec![],
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(days.into()),
        }
    }
}

/// The outcome of `cert issue`.
#[derive(Debug, Clone)]
pub struct Issued {
    pub files: NodeCertFiles,
    pub cert: IssuedCert,
    /// Earlier certificates of the same name that remain valid until revoked.
    pub still_valid: Vec<String>,
}

/// A CA directory.
#[derive(Debug, Clone)]
pub struct CertAuthority {
    dir: PathBuf,
}

fn file_err(path: &Path, e: impl ToString) -> PkiError {
    PkiError::File { path: path.display().to_string(), reason: e.to_string() }
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| file_err(path, e))
}

/// Written to a temporary file, synced, renamed: readers (a reloading daemon) never
/// see half a file.
fn write_atomic(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| file_err(&tmp, e))?;
    f.sync_all().map_err(|e| file_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// Held while the directory changes, so that two `xtsyncctl cert` runs cannot lose
/// an index update (a lost revocation would be a security bug).
struct DirLock(#[allow(dead_code)] fs::File);

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, PkiError> {
        let path = dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| file_err(&path, e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| file_err(&path, e))?;
        Ok(DirLock(f))
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl CertAuthority {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_files(&self) -> CaFiles {
        CaFiles {
            cert_path: self.dir.join("ca.crt"),
            key_path: self.dir.join("ca.key"),
            crl_path: self.dir.join("ca.crl"),
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// The files of certificate `name` in this directory.
    pub fn cert_files(&self, name: &str) -> NodeCertFiles {
        NodeCertFiles {
            cert_path: self.dir.join(format!("{name}.crt")),
            key_path: self.dir.join(format!("{name}.key")),
        }
    }

    /// Creates a new CA (key, certificate, empty index, empty CRL) in `dir`.
    pub fn init(dir: &Path, cluster: &str) -> Result<CertAuthority, PkiError> {
        fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        // Every private key of the cluster lives here: only the owner may list or read it.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| file_err(dir, e))?;
        }
        let ca = CertAuthority { dir: dir.to_path_buf() };
        let _lock = DirLock::take(dir)?;
        let files = ca.ca_files();
        if files.cert_path.exists() {
            return Err(PkiError::AlreadyInitialized { dir: dir.display().to_string() });
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{cluster} xtsync CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(CA_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_atomic(&files.key_path, &key.serialize_pem(), true)?;
        let mut index = CertIndex::new(cluster);
        ca.write_crl(&mut index, &key, &cert.pem())?;
        ca.save_index(&index)?;
        // Last: a directory with ca.crt is a complete CA.
        write_atomic(&files.cert_path, &cert.pem(), false)?;
        Ok(ca)
    }

    /// Opens the CA in `dir`. A CA made before the index existed (an older quickstart)
    /// gets an empty index and CRL.
    pub fn open(dir: &Path) -> Result<CertAuthority, PkiError> {
        let ca = CertAuthority { dir: dir.to_path_buf() };
        let files = ca.ca_files();
        if !files.cert_path.exists() || !files.key_path.exists() {
            return Err(PkiError::NotInitialized { dir: dir.display().to_string() });
        }
        if !ca.index_path().exists() || !files.crl_path.exists() {
            let _lock = DirLock::take(dir)?;
            // A missing index is created; an unreadable one is an error: replacing it
            // would drop every revocation from the next CRL.
            let mut index = if ca.index_path().exists() { ca.load_index()? } else { CertIndex::new("xtsync") };
            let (key, cert_pem) = ca.signing_material()?;
            ca.write_crl(&mut index, &key, &cert_pem)?;
            ca.save_index(&index)?;
        }
        Ok(ca)
    }

    /// Opens the CA in `dir`, creating it first if there is none (quickstart, tests).
    pub fn open_or_init(dir: &Path, cluster: &str) -> Result<CertAuthority, PkiError> {
        match CertAuthority::open(dir) {
            Err(PkiError::NotInitialized { .. }) => match CertAuthority::init(dir, cluster) {
                // Another process won the race: use its CA.
                Err(PkiError::AlreadyInitialized { .. }) => CertAuthority::open(dir),
                other => other,
            },
            other => other,
        }
    }

    /// The register of issued certificates.
    pub fn index(&self) -> Result<CertIndex, PkiError> {
        self.load_index()
    }

    fn load_index(&self) -> Result<CertIndex, PkiError> {
        let path = self.index_path();
        let text = read(&path)?;
        let index: CertIndex = serde_json::from_str(&text)
            .map_err(|e| PkiError::IndexCorrupt { path: path.display().to_string(), reason: e.to_string() })?;
        index.check_version()?;
        Ok(index)
    }

    fn save_index(&self, index: &CertIndex) -> Result<(), PkiError> {
        let text = serde_json::to_string_pretty(index).expect("the index serializes");
        write_atomic(&self.index_path(), &(text + "\n"), false)
    }

    fn signing_material(&self) -> Result<(KeyPair, String), PkiError> {
        let files = self.ca_files();
        Ok((KeyPair::from_pem(&read(&files.key_path)?)?, read(&files.cert_path)?))
    }

    /// Signs a CRL listing every revoked certificate of `index` (bumps its number).
    fn write_crl(&self, index: &mut CertIndex, key: &KeyPair, ca_pem: &str) -> Result<(), PkiError> {
        let issuer = Issuer::from_ca_cert_pem(ca_pem, key)?;
        let mut revoked_certs = Vec::new();
        for c in index.revoked() {
            let serial = hex_bytes(&c.serial).ok_or_else(|| PkiError::IndexCorrupt {
                path: self.index_path().display().to_string(),
                reason: format!("serial {:?} is not hex", c.serial),
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(c.revoked_unix.unwrap_or(0))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - CLOCK_SKEW,
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from(index.next_crl_number()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        write_atomic(&self.ca_files().crl_path, &crl.pem()?, false)
    }

    /// Issues a certificate for `req.name` with `req.role`, writes `NAME.crt`/`NAME.key`
    /// (replacing an earlier pair of that name) and records it in the index.
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, PkiError> {
        validate_name(&req.name)?;
        if req.not_after <= req.not_before {
            return Err(IndexError::EmptyValidity.into());
        }
        let _lock = DirLock::take(&self.dir)?;
        let mut index = self.load_index()?;
        let (ca_key, ca_pem) = self.signing_material()?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;

        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut sans = Vec::new();
        if is_dns_name(&req.name) {
            sans.push(req.name.clone());
        }
        sans.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        for s in &req.sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        for san in &sans {
            params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.name.as_str());
        dn.push(DnType::OrganizationalUnitName, req.role.as_str());
        params.distinguished_name = dn;
        params.not_before = req.not_before;
        params.not_after = req.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Admins only ever dial out: their certificates cannot serve TLS. Agents serve
        // the data port in pull mode (a worker pushes to them).
        params.extended_key_usages = match req.role {
            Role::Coordinator | Role::Worker | Role::Agent => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
            Role::Admin => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let identity = identity_of(cert.der()).map_err(|e| PkiError::ReadBack(e.to_string()))?;

        let now = unix(OffsetDateTime::now_utc());
        let entry = IssuedCert {
            name: req.name.clone(),
            role: req.role,
            serial: identity.serial,
            not_before_unix: unix(req.not_before),
            not_after_unix: unix(req.not_after),
            sans,
            issued_unix: now,
            revoked_unix: None,
        };
        let still_valid = index.record(entry.clone(), now)?;
        // The index first: a certificate that exists is always in it (and revocable),
        // even if writing its files or the CRL fails afterwards.
        self.save_index(&index)?;
        let files = self.cert_files(&req.name);
        // Key first: a reloading daemon that sees the new certificate with the old key
        // refuses the pair and retries at the next change (the key rename).
        write_atomic(&files.key_path, &key.serialize_pem(), true)?;
        write_atomic(&files.cert_path, &cert.pem(), false)?;
        // Signed again so that nextUpdate moves forward with every change.
        self.write_crl(&mut index, &ca_key, &ca_pem)?;
        self.save_index(&index)?;
        Ok(Issued { files, cert: entry, still_valid })
    }

    /// Revokes one serial or every certificate of a name, and signs a new CRL.
    pub fn revoke(&self, name_or_serial: &str) -> Result<Vec<IssuedCert>, PkiError> {
        let _lock = DirLock::take(&self.dir)?;
        let mut index = self.load_index()?;
        let revoked = index.revoke(name_or_serial, unix(OffsetDateTime::now_utc()))?;
        // The revocation is recorded before the CRL is signed: if signing fails, the
        // next CRL written from the index still carries it.
        self.save_index(&index)?;
        let (key, pem) = self.signing_material()?;
        self.write_crl(&mut index, &key, &pem)?;
        self.save_index(&index)?;
        Ok(revoked)
    }
}

fn hex_bytes(serial: &str) -> Option<Vec<u8>> {
    let hex = normalize_serial(serial)?;
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// The CA in `dir`, created if missing (quickstart and tests).
pub fn load_or_create_ca(dir: &Path, cluster_name: &str) -> Result<CaFiles, PkiError> {
    Ok(CertAuthority::open_or_init(dir, cluster_name)?.ca_files())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_revoke_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::init(dir.path(), "lab").unwrap();
        assert!(matches!(CertAuthority::init(dir.path(), "lab"), Err(PkiError::AlreadyInitialized { .. })));
        let a = ca.issue(&IssueRequest::for_days("worker-a", Role::Worker, 30)).unwrap();
        let pem = fs::read(&a.files.cert_path).unwrap();
        let der = rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap();
        let id = identity_of(&der).unwrap();
        assert_eq!((id.name.as_str(), id.role, id.serial.as_str()), ("worker-a", Role::Worker, a.cert.serial.as_str()));
        let again = ca.issue(&IssueRequest::for_days("worker-a", Role::Worker, 30)).unwrap();
        assert_eq!(again.still_valid, vec![a.cert.serial.clone()]);

        let revoked = ca.revoke(&a.cert.serial).unwrap();
        assert_eq!(revoked.len(), 1);
        let index = ca.index().unwrap();
        assert_eq!(index.revoked().count(), 1);
        assert_eq!(index.crl_number, 4, "init, two issues and a revocation each signed a CRL");
        let crl_pem = fs::read(ca.ca_files().crl_path).unwrap();
        let crl = rustls_pemfile::crls(&mut &crl_pem[..]).next().unwrap().unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
        let listed: Vec<String> =
            parsed.iter_revoked_certificates().map(|r| crate::identity::hex_lower(r.raw_serial())).collect();
        assert_eq!(listed, vec![a.cert.serial]);
    }

    #[test]
    fn open_requires_init_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let err = CertAuthority::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("xtsyncctl cert init-ca"), "{err}");
        let ca = CertAuthority::open_or_init(dir.path(), "lab").unwrap();
        let err = ca.issue(&IssueRequest::for_days("../evil", Role::Admin, 1)).unwrap_err();
        assert!(matches!(err, PkiError::Index(IndexError::InvalidName { .. })), "{err}");
    }
}
