//! Reading PEM files into rustls types, with errors that name the file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::{FileRole, TlsError};

/// The one crypto provider of Volley's TLS: ring, chosen explicitly rather
/// than through rustls' process-wide default, so that another crate enabling
/// aws-lc-rs in the same build cannot make config building ambiguous.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn read(role: FileRole, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        role,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `pem`, in file order; at least one.
pub(crate) fn certificates(
    role: FileRole,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            role,
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            role,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

/// The first private key in `pem`.
pub(crate) fn private_key(
    role: FileRole,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            role,
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            role,
            path: path.to_owned(),
            source,
        },
    })
}

/// A trust store of every certificate in a CA file; each must be a usable
/// trust anchor.
pub(crate) fn root_store(
    role: FileRole,
    path: &Path,
    pem: &[u8],
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(role, path, pem)? {
        roots
            .add(certificate)
            .map_err(|source| TlsError::BadCertificate {
                role,
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// A certificate chain with its key, checked to belong together: a rotated
/// key that does not match the rotated certificate is caught here, not at
/// the first handshake.
pub(crate) fn certified_key(
    certificate_role: FileRole,
    certificate_path: &Path,
    certificate_pem: &[u8],
    key_role: FileRole,
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(certificate_role, certificate_path, certificate_pem)?;
    let key = private_key(key_role, key_path, key_pem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: certificate_path.to_owned(),
            key: key_path.to_owned(),
        },
        rustls::Error::InvalidCertificate(_) => TlsError::BadCertificate {
            role: certificate_role,
            path: certificate_path.to_owned(),
            source,
        },
        source => TlsError::BadKey {
            cert: certificate_path.to_owned(),
            key: key_path.to_owned(),
            source,
        },
    })
}

/// Who a certificate names, for logs: its subject (`CN=worker-1,O=volley`),
/// or its first DNS/URI subject alternative name when the subject is empty
/// (cert-manager certificates often carry only SANs).
pub(crate) fn identity(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject().to_string();
    if !subject.is_empty() {
        return Some(subject);
    }
    let alternative_names = parsed.subject_alternative_name().ok()??;
    alternative_names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(name)
            | x509_parser::extensions::GeneralName::URI(name) => Some((*name).to_owned()),
            _ => None,
        })
}

/// The end of a certificate's validity, for logs (`Jan  1 00:00:00 2027 +00:00`).
pub(crate) fn not_after(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.validity().not_after.to_string())
}
