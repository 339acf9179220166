//! Client-facing TLS: the rustls acceptor built from `tls.cert`/`tls.key`,
//! and the certificate hash SCRAM-SHA-256-PLUS binds logins to.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio_rustls::TlsAcceptor;

/// What client TLS needs, loaded from the files; a reload loads it again.
pub struct ClientTls {
    /// Performs the handshake when a client sends `SSLRequest`.
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel-binding data (RFC 5929): the hash of
    /// pgsplit's certificate; `None` if its signature algorithm names no
    /// usable hash, and then SCRAM-SHA-256-PLUS is not offered.
    pub endpoint_hash: Option<Vec<u8>>,
}

impl ClientTls {
    /// Loads the certificate chain and key and builds an acceptor. The ring
    /// provider is named explicitly so no process-wide default is needed.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ClientTls> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!("tls.cert: cannot read certificates from {}", cert.display())
            })?;
        let endpoint_hash = certs.first().and_then(|c| endpoint_hash(c));
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
            format!("tls.key: cannot read a private key from {}", key.display())
        })?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("tls: no usable TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls: certificate and key do not form a usable pair")?;
        Ok(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            endpoint_hash,
        })
    }
}

/// The certificate's hash with the algorithm its signature uses (SHA-256
/// also for MD5 and SHA-1, as RFC 5929 says).
fn endpoint_hash(cert: &[u8]) -> Option<Vec<u8>> {
    /// DER-encoded OIDs of the signature algorithms, by hash.
    const SHA256: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b], // sha256WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],       // ecdsa-with-SHA256
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05], // sha1WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04], // md5WithRSAEncryption
    ];
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    let algorithm = signature_algorithm(cert)?;
    if SHA256.contains(&algorithm) {
        Some(Sha256::digest(cert).to_vec())
    } else if SHA384.contains(&algorithm) {
        Some(Sha384::digest(cert).to_vec())
    } else if SHA512.contains(&algorithm) {
        Some(Sha512::digest(cert).to_vec())
    } else {
        None
    }
}

/// The OID in `Certificate.signatureAlgorithm` (X.509: a SEQUENCE of the
/// to-be-signed part, the algorithm identifier, the signature).
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(cert, 0x30)?;
    let (_, after_tbs) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(after_tbs, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    Some(oid)
}

/// Splits one DER element with tag `tag` off `der`: (content, rest).
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = der.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_signature_algorithm_and_refuses_garbage() {
        // SEQUENCE { SEQUENCE {tbs}, SEQUENCE { OID ecdsa-with-SHA384 }, BIT STRING }
        let cert = [
            0x30, 0x13, 0x30, 0x01, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
            0x04, 0x03, 0x03, 0x03, 0x02, 0x00, 0x00,
        ];
        assert_eq!(
            signature_algorithm(&cert),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03][..])
        );
        assert_eq!(endpoint_hash(&cert).map(|h| h.len()), Some(48));
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 0x30],
        ] {
            assert_eq!(signature_algorithm(garbage), None);
        }
    }
}
