//! rustls configurations for every xtsync connection: TLS 1.2 and 1.3 with the `ring`
//! provider's default suites (all ECDHE key exchange with AEAD ciphers), a client
//! certificate required on every server, the CRL checked in both directions, and the
//! peer's role checked inside the handshake. A peer refused for any reason learns only
//! the alert `certificate_unknown`; the reason is for the log ([`describe_tls_error`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::identity::{identity_of, roles_list, PeerIdentity, Role};

/// The PEM files of one component (`networking.tls` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster CA: peers must present a certificate it signed.
    pub ca: PathBuf,
    /// The CA's revocation list; without it, revoked certificates are not refused.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// A daemon's files: `--tls-cert`, `--tls-key` and `--tls-ca` all given (with
    /// `--tls-crl` optional), or else the config's `networking.tls` (whose CRL
    /// `--tls-crl` overrides). `role` names the certificate to make in the error.
    pub fn from_flags_or_config(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        crl: Option<&Path>,
        configured: Option<&xtsync_config::TlsConfig>,
        role: Role,
    ) -> Result<TlsFiles, String> {
        match (cert, key, ca, configured) {
            (Some(cert), Some(key), Some(ca), _) => Ok(TlsFiles {
                cert: cert.into(),
                key: key.into(),
                ca: ca.into(),
                crl: crl.map(Into::into),
            }),
            (None, None, None, Some(t)) => Ok(TlsFiles {
                cert: t.cert_path.clone(),
                key: t.key_path.clone(),
                ca: t.ca_path.clone(),
                crl: crl.map(Into::into).or(t.crl_path.clone()),
            }),
            _ => Err(format!(
                "TLS is required: set networking.tls (cert, key, ca, crl) in the config or pass --tls-cert, --tls-key, --tls-ca and --tls-crl (xtsyncctl cert issue --role {role}, or xtsyncctl quickstart, makes them)"
            )),
        }
    }

    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path(), self.ca.as_path()];
        v.extend(self.crl.as_deref());
        v
    }
}

/// Who may connect to a server, and whom a client accepts as its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsPolicy {
    /// The role this component's own certificate must carry.
    pub own_role: Role,
    /// Roles a client must present to complete a handshake with our server.
    pub server_accepts: &'static [Role],
    /// Roles our client accepts from the servers it dials.
    pub client_expects: &'static [Role],
}

impl TlsPolicy {
    /// Worker data plane: workers and agents on the other end (an agent pushes to a
    /// worker, or a worker pushes to a pulling agent).
    pub const WORKER: TlsPolicy = TlsPolicy {
        own_role: Role::Worker,
        server_accepts: &[Role::Worker, Role::Agent],
        client_expects: &[Role::Worker, Role::Agent],
    };
    /// Endpoint agent data plane: only workers on the other end (agents never talk to
    /// each other); REST clients dial coordinators like every component.
    pub const AGENT: TlsPolicy =
        TlsPolicy { own_role: Role::Agent, server_accepts: &[Role::Worker], client_expects: &[Role::Worker] };
    /// Coordinator REST: every role may connect (routes check roles); Raft peers are
    /// coordinators.
    pub const COORDINATOR: TlsPolicy =
        TlsPolicy { own_role: Role::Coordinator, server_accepts: &Role::ALL, client_expects: &[Role::Coordinator] };
    /// An operator (xtsyncctl): dials coordinators only, serves nothing.
    pub const ADMIN: TlsPolicy =
        TlsPolicy { own_role: Role::Admin, server_accepts: &[], client_expects: &[Role::Coordinator] };

    /// The same component dialing a coordinator (worker control thread, xtsyncctl).
    pub fn to_coordinator(self) -> TlsPolicy {
        TlsPolicy { client_expects: &[Role::Coordinator], ..self }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file is missing, unreadable or holds no usable PEM object.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA or CRL could not make a verifier.
    #[error("certificate verifier: {0}")]
    Verifier(String),
    /// Our own certificate carries the wrong role or none.
    #[error("{path}: {reason}")]
    OwnCertificate { path: String, reason: String },
}

fn file_err(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File { path: path.display().to_string(), reason: reason.to_string() }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut &pem[..]).collect::<Result<_, _>>().map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no PEM private key in file"))
}

fn load_crls(path: Option<&Path>) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    let Some(path) = path else { return Ok(vec![]) };
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let crls: Vec<_> = rustls_pemfile::crls(&mut &pem[..]).collect::<Result<_, _>>().map_err(|e| file_err(path, e))?;
    if crls.is_empty() {
        return Err(file_err(path, "no PEM certificate revocation list (X509 CRL) in file"));
    }
    Ok(crls)
}

/// The serials (lowercase hex, as [`PeerIdentity`](crate::PeerIdentity) has them) that
/// the CRL file revokes: for checking peers of connections opened before a revocation.
pub(crate) fn revoked_serials(path: Option<&Path>) -> Result<std::collections::HashSet<String>, TlsSetupError> {
    let mut serials = std::collections::HashSet::new();
    for crl in load_crls(path)? {
        let (_, parsed) = x509_parser::parse_x509_crl(&crl).map_err(|e| {
            file_err(path.expect("load_crls returns no CRL without a path"), format!("unreadable CRL: {e}"))
        })?;
        serials.extend(parsed.iter_revoked_certificates().map(|r| crate::identity::hex_lower(r.raw_serial())));
    }
    Ok(serials)
}

fn roots(ca_path: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_path)? {
        roots.add(cert).map_err(|e| file_err(ca_path, e))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Our certificate and key, with the certificate's role checked against the policy.
fn own_cert(
    files: &TlsFiles,
    policy: &TlsPolicy,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, PeerIdentity), TlsSetupError> {
    let certs = load_certs(&files.cert)?;
    let own = |reason: String| TlsSetupError::OwnCertificate { path: files.cert.display().to_string(), reason };
    let identity = identity_of(&certs[0]).map_err(|e| own(e.to_string()))?;
    if identity.role != policy.own_role {
        return Err(own(format!(
            "certificate {identity} cannot be used by {} {} (issue one with `xtsyncctl cert issue --role {}`)",
            if policy.own_role == Role::Agent || policy.own_role == Role::Admin { "an" } else { "a" },
            policy.own_role,
            policy.own_role
        )));
    }
    Ok((certs, load_key(&files.key)?, identity))
}

/// Server side: a client certificate from the CA, not revoked, with an accepted role.
pub fn server_config(files: &TlsFiles, policy: &TlsPolicy) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (certs, key, _) = own_cert(files, policy)?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .with_crls(load_crls(files.crl.as_deref())?)
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
    let verifier = Arc::new(RoleClientVerifier { inner, accepted: policy.server_accepts });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    // Kernel TLS hand-off: the session secrets must be extractable, and no ticket may
    // be sent after the handshake (the kernel would receive it as data).
    config.enable_secret_extraction = true;
    config.send_tls13_tickets = 0;
    // Our order (AES-256-GCM first), not the client's: a weak client cannot pick the
    // weakest suite both sides share.
    config.ignore_client_order = true;
    // No session resumption (TLS 1.2 IDs or tickets): every connection presents and has
    // its certificate checked against the current CA and CRL. (Without resumption, and
    // rustls never renegotiates, the extended master secret is not required: requiring
    // it would refuse TLS 1.2 scanners and old clients for no gain.)
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Client side: the server must be signed by the CA, not revoked, valid for the name
/// we dial, and carry an expected role; we present our own certificate.
pub fn client_config(files: &TlsFiles, policy: &TlsPolicy) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let (certs, key, _) = own_cert(files, policy)?;
    let inner = WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .with_crls(load_crls(files.crl.as_deref())?)
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
    let verifier = Arc::new(RoleServerVerifier { inner, expected: policy.client_expects });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)?;
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// Why a peer's certificate was refused, with the name and role it claimed when they
/// could be read. Carried inside rustls' error as an [`OtherError`], so that the alert
/// the peer gets is the uninformative `certificate_unknown`.
#[derive(Debug)]
pub struct PeerRefusal {
    /// Read from the unverified certificate: what the peer claims to be.
    pub claimed: Option<PeerIdentity>,
    pub reason: RefusalReason,
}

#[derive(Debug)]
pub enum RefusalReason {
    /// webpki refused the certificate (issuer, validity, revocation, name, usage).
    Certificate(CertificateError),
    /// The certificate is valid but its role is not accepted here.
    Role { accepted: &'static [Role] },
    /// The certificate is valid but carries no usable role.
    NoRole(String),
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.claimed {
            Some(id) => write!(f, "certificate {id}")?,
            None => write!(f, "certificate (no xtsync name or role)")?,
        }
        match &self.reason {
            RefusalReason::Certificate(e) => write!(f, " refused: {}", certificate_error_text(e)),
            RefusalReason::Role { accepted } => {
                write!(f, " refused: wrong role; accepted here: {}", roles_list(accepted))
            }
            RefusalReason::NoRole(e) => write!(f, " refused: {e}"),
        }
    }
}

impl std::error::Error for PeerRefusal {}

fn certificate_error_text(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => "not issued by this cluster's CA (unknown issuer)".into(),
        CertificateError::Revoked => "revoked (listed in the CA's CRL)".into(),
        CertificateError::Expired => "expired".into(),
        CertificateError::UnknownRevocationStatus => "revocation status unknown (CRL of another CA?)".into(),
        other => other.to_string(),
    }
}

fn refusal(cert: &CertificateDer<'_>, reason: RefusalReason) -> Error {
    let claimed = identity_of(cert).ok();
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PeerRefusal { claimed, reason }))))
}

/// Turns webpki's verdict and the role check into one [`PeerRefusal`].
fn check(cert: &CertificateDer<'_>, verdict: Result<(), Error>, accepted: &'static [Role]) -> Result<(), Error> {
    match verdict {
        Ok(()) => {}
        Err(Error::InvalidCertificate(e)) => return Err(refusal(cert, RefusalReason::Certificate(e))),
        Err(other) => return Err(other),
    }
    match identity_of(cert) {
        Ok(id) if accepted.contains(&id.role) => Ok(()),
        Ok(_) => Err(refusal(cert, RefusalReason::Role { accepted })),
        Err(e) => Err(refusal(cert, RefusalReason::NoRole(e.to_string()))),
    }
}

#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accepted: &'static [Role],
}

impl ClientCertVerifier for RoleClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verdict = self.inner.verify_client_cert(end_entity, intermediates, now).map(|_| ());
        check(end_entity, verdict, self.accepted).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: &'static [Role],
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict =
            self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map(|_| ());
        check(end_entity, verdict, self.expected).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error behind `err`, if TLS is why it failed (walks the sources).
pub fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<Error>() {
            return Some(tls);
        }
        // io::Error hides its inner error from source(): look through it.
        if let Some(tls) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = tls.downcast_ref::<Error>() {
                return Some(tls);
            }
        }
        cur = e.source();
    }
    None
}

/// A one-line reason for a failed connection, for the log: the rustls error (a
/// [`PeerRefusal`] in full) when TLS is the cause, else the whole error chain.
pub fn describe_tls_error(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = find_tls_error(err) {
        return describe_rustls(tls);
    }
    // Not a TLS error: the whole chain ("error sending request: connection refused").
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

fn describe_rustls(e: &Error) -> String {
    match e {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            match inner.downcast_ref::<PeerRefusal>() {
                Some(r) => r.to_string(),
                None => e.to_string(),
            }
        }
        Error::NoCertificatesPresented => "the peer presented no client certificate".into(),
        Error::AlertReceived(alert) => format!("the peer refused the handshake (TLS alert {alert:?})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_win_whole_or_not_at_all_and_the_crl_flag_overrides_the_config() {
        fn p(s: &str) -> Option<&Path> {
            Some(Path::new(s))
        }
        let configured = xtsync_config::TlsConfig {
            cert_path: "/etc/c.crt".into(),
            key_path: "/etc/c.key".into(),
            ca_path: "/etc/ca.crt".into(),
            crl_path: Some("/etc/ca.crl".into()),
        };
        let flags =
            TlsFiles::from_flags_or_config(p("/f.crt"), p("/f.key"), p("/ca"), None, Some(&configured), Role::Worker)
                .unwrap();
        assert_eq!((flags.cert.to_str(), flags.crl), (Some("/f.crt"), None));
        let config =
            TlsFiles::from_flags_or_config(None, None, None, p("/new.crl"), Some(&configured), Role::Worker).unwrap();
        assert_eq!((config.cert.to_str(), config.crl.as_deref()), (Some("/etc/c.crt"), p("/new.crl")));
        let partial =
            TlsFiles::from_flags_or_config(p("/f.crt"), None, None, None, Some(&configured), Role::Coordinator);
        assert!(partial.unwrap_err().contains("--role coordinator"), "a partial set of flags is an error");
    }

    use super::*;
    use crate::pki::{CertAuthority, IssueRequest};

    fn files(ca: &CertAuthority, name: &str) -> TlsFiles {
        let n = ca.cert_files(name);
        TlsFiles { cert: n.cert_path, key: n.key_path, ca: ca.ca_files().cert_path, crl: Some(ca.ca_files().crl_path) }
    }

    #[test]
    fn generated_pki_builds_both_configs_with_kernel_tls_settings() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::open_or_init(dir.path(), "test").unwrap();
        ca.issue(&IssueRequest::for_days("worker-a", Role::Worker, 1)).unwrap();
        let s = server_config(&files(&ca, "worker-a"), &TlsPolicy::WORKER).unwrap();
        assert!(s.enable_secret_extraction && s.send_tls13_tickets == 0 && s.ignore_client_order);
        let c = client_config(&files(&ca, "worker-a"), &TlsPolicy::WORKER).unwrap();
        assert!(c.enable_secret_extraction);
    }

    #[test]
    fn own_certificate_of_the_wrong_role_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::open_or_init(dir.path(), "test").unwrap();
        ca.issue(&IssueRequest::for_days("ops", Role::Admin, 1)).unwrap();
        let err = server_config(&files(&ca, "ops"), &TlsPolicy::WORKER).unwrap_err().to_string();
        assert!(err.contains("ops.crt") && err.contains("role admin") && err.contains("--role worker"), "{err}");
    }

    #[test]
    fn missing_or_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let f = TlsFiles { cert: missing.clone(), key: missing.clone(), ca: missing.clone(), crl: None };
        let err = server_config(&f, &TlsPolicy::WORKER).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a pem").unwrap();
        let f = TlsFiles { cert: garbage.clone(), key: garbage.clone(), ca: garbage.clone(), crl: None };
        let err = client_config(&f, &TlsPolicy::WORKER).unwrap_err().to_string();
        assert!(err.contains("garbage.crt") && err.contains("no PEM"), "{err}");
    }

    /// Drives a handshake between two in-memory connections; returns the server's and
    /// the client's error, if any.
    fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (Option<Error>, Option<Error>) {
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let mut c = rustls::ClientConnection::new(client, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        let (mut s_err, mut c_err) = (None, None);
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut &buf[..]).unwrap();
                if let Err(e) = s.process_new_packets() {
                    s_err.get_or_insert(e);
                }
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                c.read_tls(&mut &buf[..]).unwrap();
                if let Err(e) = c.process_new_packets() {
                    c_err.get_or_insert(e);
                }
            }
            if s_err.is_some() || c_err.is_some() || (!s.is_handshaking() && !c.is_handshaking()) {
                break;
            }
        }
        (s_err, c_err)
    }

    #[test]
    fn roles_revocation_and_expiry_are_checked_in_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::open_or_init(dir.path(), "test").unwrap();
        for (name, role) in
            [("w1", Role::Worker), ("w2", Role::Worker), ("c1", Role::Coordinator), ("ops", Role::Admin)]
        {
            ca.issue(&IssueRequest::for_days(name, role, 1)).unwrap();
        }
        let worker_server = server_config(&files(&ca, "w1"), &TlsPolicy::WORKER).unwrap();
        let as_worker = client_config(&files(&ca, "w2"), &TlsPolicy::WORKER).unwrap();
        assert!(matches!(handshake(worker_server.clone(), as_worker.clone()), (None, None)));

        // A coordinator dialing a worker's data port: refused by the worker, with the name.
        let coord_policy = TlsPolicy { client_expects: &[Role::Worker], ..TlsPolicy::COORDINATOR };
        let as_coordinator = client_config(&files(&ca, "c1"), &coord_policy).unwrap();
        let (s_err, _) = handshake(worker_server.clone(), as_coordinator);
        let text = describe_tls_error(&s_err.expect("refused"));
        assert!(text.contains("c1 (role coordinator") && text.contains("wrong role"), "{text}");

        // A worker client expecting a coordinator server refuses a worker server.
        let expects_coordinator = TlsPolicy { client_expects: &[Role::Coordinator], ..TlsPolicy::WORKER };
        let (_, c_err) =
            handshake(worker_server.clone(), client_config(&files(&ca, "w2"), &expects_coordinator).unwrap());
        assert!(describe_tls_error(&c_err.expect("refused")).contains("w1 (role worker"));

        // A source worker refuses a "target" that presents a coordinator certificate.
        let coordinator_server = server_config(&files(&ca, "c1"), &TlsPolicy::COORDINATOR).unwrap();
        let (_, c_err) = handshake(coordinator_server, as_worker.clone());
        let text = describe_tls_error(&c_err.expect("refused"));
        assert!(text.contains("c1 (role coordinator") && text.contains("accepted here: worker"), "{text}");

        // Revoked: the server reads the new CRL when its config is built again.
        ca.revoke("w2").unwrap();
        let reloaded = server_config(&files(&ca, "w1"), &TlsPolicy::WORKER).unwrap();
        let (s_err, _) = handshake(reloaded, as_worker);
        let text = describe_tls_error(&s_err.expect("refused"));
        assert!(text.contains("w2 (role worker") && text.contains("revoked"), "{text}");

        // Expired.
        let mut req = IssueRequest::for_days("old", Role::Worker, 1);
        req.not_before -= time::Duration::days(10);
        req.not_after = req.not_before + time::Duration::days(1);
        ca.issue(&req).unwrap();
        let as_old = client_config(&files(&ca, "old"), &TlsPolicy::WORKER).unwrap();
        let (s_err, _) = handshake(worker_server, as_old);
        let text = describe_tls_error(&s_err.expect("refused"));
        assert!(text.contains("old (role worker") && text.contains("expired"), "{text}");
    }

    #[test]
    fn agents_and_workers_connect_both_ways_but_agents_not_to_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::open_or_init(dir.path(), "test").unwrap();
        for (name, role) in [("w1", Role::Worker), ("edge-1", Role::Agent), ("edge-2", Role::Agent)] {
            ca.issue(&IssueRequest::for_days(name, role, 1)).unwrap();
        }
        let worker_server = server_config(&files(&ca, "w1"), &TlsPolicy::WORKER).unwrap();
        let worker_client = client_config(&files(&ca, "w1"), &TlsPolicy::WORKER).unwrap();
        let agent_server = server_config(&files(&ca, "edge-1"), &TlsPolicy::AGENT).unwrap();
        let agent_client = client_config(&files(&ca, "edge-2"), &TlsPolicy::AGENT).unwrap();
        // Push: the agent dials a worker. Pull: a worker dials the agent.
        assert!(matches!(handshake(worker_server, agent_client.clone()), (None, None)));
        assert!(matches!(handshake(agent_server.clone(), worker_client), (None, None)));
        // The dialing agent refuses the other agent's server certificate first.
        let (_, c_err) = handshake(agent_server, agent_client);
        let text = describe_tls_error(&c_err.expect("refused"));
        assert!(text.contains("edge-1 (role agent") && text.contains("accepted here: worker"), "{text}");
        // An agent certificate cannot be a worker's.
        let err = server_config(&files(&ca, "edge-1"), &TlsPolicy::WORKER).unwrap_err().to_string();
        assert!(err.contains("role agent") && err.contains("--role worker"), "{err}");
    }
}
