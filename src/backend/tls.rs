//! TLS from pgsplit to the PostgreSQL nodes, with libpq's `sslmode`
//! semantics: `prefer`/`require` encrypt without checking the certificate,
//! `verify-ca` checks the chain against `ca_file`, `verify-full` also the
//! host name.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ServerTlsConfig, ServerTlsMode};
use crate::net::{is_drained, MaybeTls, NodeSocket};

/// How pgsplit secures its server connections. Clones share the rustls
/// configuration, so a reload that re-reads the CA file reaches them all.
#[derive(Clone)]
pub struct ServerTls {
    /// The `server_tls.mode` in force: whether plaintext is acceptable.
    pub mode: ServerTlsMode,
    config: Arc<ArcSwap<rustls::ClientConfig>>,
}

impl ServerTls {
    /// A connector with the configuration in force.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.load_full())
    }

    /// Puts `fresh`'s configuration (the CA file read again) in force for
    /// this object and all its clones.
    pub fn replace_with(&self, fresh: &ServerTls) {
        self.config.store(fresh.config.load_full());
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({:?})", self.mode)
    }
}

/// Builds the connector for `server_tls`; `None` when TLS is disabled.
pub fn from_config(config: &ServerTlsConfig) -> anyhow::Result<Option<ServerTls>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match config.mode {
        ServerTlsMode::Disable => return Ok(None),
        ServerTlsMode::Prefer | ServerTlsMode::Require => {
            Arc::new(NoVerification(provider.clone()))
        }
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
            let path = config
                .ca_file
                .as_ref()
                .context("server_tls.ca_file: required by verify-ca and verify-full")?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("server_tls.ca_file: cannot read {}", path.display()))?
            {
                let cert = cert.with_context(|| {
                    format!("server_tls.ca_file: bad PEM in {}", path.display())
                })?;
                roots.add(cert).with_context(|| {
                    format!(
                        "server_tls.ca_file: unusable certificate in {}",
                        path.display()
                    )
                })?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("server_tls.ca_file: no usable CA certificate")?;
            if config.mode == ServerTlsMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("server_tls: no usable TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(ServerTls {
        mode: config.mode,
        config: Arc::new(ArcSwap::from_pointee(client_config)),
    }))
}

/// `prefer`/`require`: encryption without authentication of the server,
/// exactly what libpq does in those modes. Signatures are still checked so
/// the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the configured CA; the name in the
/// certificate may differ from the host pgsplit connects to.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A server socket, plain or TLS.
pub type ServerStream = MaybeTls<TlsStream<TcpStream>, NodeSocket>;

/// Whether an idle connection is still usable: not closed by the server
/// and with nothing unread (an idle server only writes when it is about to
/// close the connection).
pub fn is_quiet(stream: &ServerStream) -> bool {
    match stream {
        MaybeTls::Plain(s) => is_drained(s),
        MaybeTls::Tls(s) => is_drained(s.get_ref().0),
        MaybeTls::Detached => false,
    }
}
