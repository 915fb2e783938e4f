//! rustls configurations: TLS 1.3 only, AEAD suites from the `ring` provider, client
//! certificates required and verified against the cluster CA in both directions.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
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

fn roots(ca_path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_path)? {
        roots.add(cert).map_err(|e| file_err(ca_path, e))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side of a data-plane session: requires a client certificate from `ca_path`.
pub fn server_config(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_path)?), provider())
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert_path)?, load_key(key_path)?)?;
    // Kernel TLS takes the session keys after the handshake, and a TLS 1.3 session
    // ticket sent after the handshake would reach a kTLS socket as a record it cannot
    // parse: sessions are never resumed, so no tickets.
    config.enable_secret_extraction = true;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client side: verifies the server against `ca_path` and presents our certificate.
pub fn client_config(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_path)?)
        .with_client_auth_cert(load_certs(cert_path)?, load_key(key_path)?)?;
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::*;

    #[test]
    fn generated_pki_builds_both_configs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create_ca(dir.path(), "test").unwrap();
        let node = issue_node_cert(&ca, dir.path(), "worker-a", Role::Worker, &[]).unwrap();
        server_config(&node.cert_path, &node.key_path, &ca.cert_path).unwrap();
        client_config(&node.cert_path, &node.key_path, &ca.cert_path).unwrap();
        // Loading again reuses the same CA.
        let again = load_or_create_ca(dir.path(), "test").unwrap();
        assert_eq!(std::fs::read(&again.cert_path).unwrap(), std::fs::read(&ca.cert_path).unwrap());
    }

    #[test]
    fn missing_or_garbage_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = server_config(&missing, &missing, &missing).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a pem").unwrap();
        let err = client_config(&garbage, &garbage, &garbage).unwrap_err().to_string();
        assert!(err.contains("garbage.crt") && err.contains("no PEM"), "{err}");
    }
}
