//! Client endpoints: the URL's scheme decides TLS, never a flag that could disagree with it.
//!
//! `https://` always means TLS (the CA file when given, else the bundled
//! webpki roots); `http://` or a bare `host:port` means plaintext, and is
//! refused when TLS files are given rather than silently ignoring them.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{FileRole, TlsError};
use crate::pem;

/// The TLS files of a client; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificates to trust for the server's certificate, instead
    /// of the bundled webpki (Mozilla) roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require mTLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// The endpoint of `url` (`https://host:port`, `http://host:port`, or
/// `host:port`, taken as http), with TLS configured from `files` as
/// [`configure_endpoint`] does. Callers add their timeouts and keepalives.
pub fn client_endpoint(url: &str, files: &ClientTlsFiles) -> Result<Endpoint, TlsError> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| TlsError::InvalidUrl { url, source })?;
    configure_endpoint(endpoint, files)
}

/// Configures TLS on `endpoint` by its URL's scheme: `https://` gets TLS
/// (trusting `files.ca`, else the webpki roots; presenting `files.cert` and
/// `files.key` when given); any other scheme stays plaintext, and is an
/// error when `files` names any file. Every file is read and checked now.
pub fn configure_endpoint(
    endpoint: Endpoint,
    files: &ClientTlsFiles,
) -> Result<Endpoint, TlsError> {
    let url = endpoint.uri().to_string();
    if endpoint.uri().scheme_str() != Some("https") {
        if files.is_empty() {
            return Ok(endpoint);
        }
        return Err(TlsError::PlaintextUrlWithTls { url });
    }
    let config = tls_config(files)?;
    endpoint
        .tls_config(config)
        .map_err(|source| TlsError::Endpoint { url, source })
}

fn tls_config(files: &ClientTlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let config = ClientTlsConfig::new();
    let config = match &files.ca {
        Some(path) => {
            let ca_pem = pem::read(FileRole::ServerCa, path)?;
            // Checked here so that a bad file is an error naming it, not a
            // handshake failure at the first call.
            pem::root_store(FileRole::ServerCa, path, &ca_pem)?;
            config.ca_certificate(Certificate::from_pem(ca_pem))
        }
        None => config.with_webpki_roots(),
    };
    match (&files.cert, &files.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = pem::read(FileRole::ClientCertificate, cert_path)?;
            let key_pem = pem::read(FileRole::ClientKey, key_path)?;
            pem::certified_key(
                FileRole::ClientCertificate,
                cert_path,
                &cert_pem,
                FileRole::ClientKey,
                key_path,
                &key_pem,
            )?;
            Ok(config.identity(Identity::from_pem(cert_pem, key_pem)))
        }
        (Some(cert_path), None) => Err(TlsError::CertWithoutKey {
            cert: cert_path.clone(),
        }),
        (None, Some(key_path)) => Err(TlsError::KeyWithoutCert {
            key: key_path.clone(),
        }),
        (None, None) => Ok(config),
    }
}
