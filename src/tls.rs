//! PEM files and rustls settings, for both ends of an HTTPS callback.
//!
//! The dispatcher reads a rule's `ca_file`, `client_cert` and `client_key` (docs/behaviour.md §2); the sink
//! reads its `--tls-cert`, `--tls-key` and `--client-ca`. Both go through here, so a bad file
//! is reported the same way — naming the file and what is wrong with it — and at startup,
//! rather than as a failed handshake on every callback later.
//!
//! There is one crypto provider, ring: the callbacks' client (hyper-rustls) and reqwest's rustls
//! are built with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemError {
    /// The file, as given in the config or on the command line.
    pub path: PathBuf,
    /// What is wrong: unreadable, no PEM block, not a certificate or key, mismatched key…
    pub reason: String,
}

impl PemError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The crypto provider of every TLS connection made or served here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError::new(path, format!("cannot read it: {e}")))
}

/// Every certificate of a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new(path, format!("not a valid PEM file: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
            " (it holds a private key: was the certificate file meant?)"
        } else {
            ""
        };
        return Err(PemError::new(
            path,
            format!("holds no certificate: expected a PEM block \"-----BEGIN CERTIFICATE-----\"{hint}"),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let hint = if CertificateDer::from_pem_slice(&bytes).is_ok() {
                " (it holds a certificate: was the key file meant?)"
            } else {
                ""
            };
            Err(PemError::new(
                path,
                format!(
                    "holds no private key: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" \
                     (or RSA / EC PRIVATE KEY){hint}"
                ),
            ))
        }
        Err(e) => Err(PemError::new(path, format!("not a valid PEM file: {}", pem_reason(&e)))),
    }
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor: a rule's
/// `ca_file`.
pub fn read_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = read_certs(path)?;
    roots_of(path, &certs)?;
    Ok(certs)
}

/// The certificates of a PEM file as trust anchors: the sink's `--client-ca`.
pub fn read_roots(path: &Path) -> Result<RootCertStore, PemError> {
    roots_of(path, &read_certs(path)?)
}

fn roots_of(path: &Path, certs: &[CertificateDer<'_>]) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots.add(CertificateDer::from(cert.as_ref())).map_err(|e| {
            PemError::new(
                path,
                format!("certificate {} is not a usable X.509 certificate: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// A certificate chain and the private key that goes with its first certificate, checked to
/// match: a rule's `client_cert` + `client_key`, the sink's `--tls-cert` + `--tls-key`.
pub fn read_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PemError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    match CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider()) {
        Ok(_) => Ok((certs, key)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(PemError::new(
            key_path,
            format!("is not the private key of the certificate in {}", cert_path.display()),
        )),
        Err(rustls::Error::InvalidCertificate(e)) => Err(PemError::new(
            cert_path,
            format!("its first certificate is not a usable X.509 certificate: {e}"),
        )),
        Err(e) => Err(PemError::new(key_path, format!("unusable private key: {e}"))),
    }
}

/// The sink's HTTPS settings: its certificate and key, and with `client_ca` mutual TLS — every
/// client must present a certificate signed by that CA. Offers HTTP/2 and HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig, PemError> {
    let (chain, key_der) = read_identity(cert, key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PemError::new(cert, format!("no usable TLS version: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = read_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| PemError::new(ca, format!("cannot verify client certificates with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| PemError::new(cert, format!("cannot serve with this certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A PEM syntax error in words (the pki-types text shows raw bytes).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "a section has no \"-----END {}-----\" line",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed \"-----BEGIN\" line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_certs(&missing).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.reason.starts_with("cannot read it"), "{e}");

        let empty = file(dir.path(), "empty.pem", "hello\n");
        let e = read_certs(&empty).unwrap_err();
        assert!(e.to_string().contains("empty.pem: holds no certificate"), "{e}");
        let e = read_key(&empty).unwrap_err();
        assert!(e.to_string().contains("empty.pem: holds no private key"), "{e}");

        let cut = file(dir.path(), "cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = read_certs(&cut).unwrap_err();
        assert!(e.reason.contains("-----END CERTIFICATE-----"), "{e}");

        let garbage = file(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = read_roots(&garbage).unwrap_err();
        assert!(e.reason.contains("certificate 1 is not a usable X.509"), "{e}");
    }
}
