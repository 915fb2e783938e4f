//! A cluster certificate authority on disk: `ca.crt`/`ca.key`, and `<name>.crt`/`.key`
//! per node, signed by it. The node's role is written in the subject's OU so that
//! peers can check it (issue 4 enforces roles).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Coordinator,
    Worker,
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NodeCertFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::File { path: path.display().to_string(), reason: e.to_string() })
}

fn write_private(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |e: std::io::Error| PkiError::File { path: path.display().to_string(), reason: e.to_string() };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Loads the CA in `dir`, creating it first if it does not exist.
pub fn load_or_create_ca(dir: &Path, cluster_name: &str) -> Result<CaFiles, PkiError> {
    let files = CaFiles { cert_path: dir.join("ca.crt"), key_path: dir.join("ca.key") };
    if files.cert_path.exists() && files.key_path.exists() {
        return Ok(files);
    }
    fs::create_dir_all(dir).map_err(|e| PkiError::File { path: dir.display().to_string(), reason: e.to_string() })?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{cluster_name} xtsync CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(&files.key_path, &key.serialize_pem(), true)?;
    write_private(&files.cert_path, &cert.pem(), false)?;
    Ok(files)
}

/// Issues a certificate for a node, valid for client and server authentication, with
/// its name, `localhost` and the given addresses as subject alternative names.
pub fn issue_node_cert(
    ca: &CaFiles,
    out_dir: &Path,
    name: &str,
    role: Role,
    extra_sans: &[String],
) -> Result<NodeCertFiles, PkiError> {
    let ca_key = KeyPair::from_pem(&read(&ca.key_path)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca.cert_path)?, ca_key)?;
    let mut sans = vec![name.to_string(), "localhost".to_string()];
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for san in sans {
        params.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.try_into()?),
        });
    }
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("literal")));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let files =
        NodeCertFiles { cert_path: out_dir.join(format!("{name}.crt")), key_path: out_dir.join(format!("{name}.key")) };
    write_private(&files.key_path, &key.serialize_pem(), true)?;
    write_private(&files.cert_path, &cert.pem(), false)?;
    Ok(files)
}
