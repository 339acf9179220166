//! Client-facing TLS: the rustls acceptor built from `tls.cert`/`tls.key`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Loads the certificate chain and key and builds an acceptor. The ring
/// provider is named explicitly so no process-wide default is needed.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("tls.cert: cannot read certificates from {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls.key: cannot read a private key from {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("tls: no usable TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("tls: certificate and key do not form a usable pair")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
