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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{HealthServer, health_status, is_tls_failure};
    use crate::testing::TestCerts;

    fn generated() -> anyhow::Result<(tempfile::TempDir, TestCerts)> {
        let dir = tempfile::tempdir()?;
        let certs = TestCerts::generate(dir.path())?;
        Ok((dir, certs))
    }

    #[test]
    fn an_http_url_with_tls_files_is_refused_with_a_hint_to_use_https() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let error = client_endpoint("http://127.0.0.1:7070", &certs.client_files())
            .expect_err("TLS files with a plaintext url");
        assert!(
            matches!(&error, TlsError::PlaintextUrlWithTls { url } if url.starts_with("http://127.0.0.1:7070")),
            "{error:?}"
        );
        assert!(error.to_string().contains("https://"), "{error}");
        Ok(())
    }

    #[test]
    fn a_bare_host_and_port_with_tls_files_is_refused_too() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let error = client_endpoint("127.0.0.1:7070", &certs.client_files())
            .expect_err("a bare host:port is plaintext");
        assert!(
            matches!(error, TlsError::PlaintextUrlWithTls { .. }),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_bare_host_and_port_without_tls_files_is_http() -> anyhow::Result<()> {
        let endpoint = client_endpoint("127.0.0.1:7070", &ClientTlsFiles::default())?;
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));
        Ok(())
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let files = ClientTlsFiles {
            key: None,
            ..certs.client_files_with_identity()
        };
        let error = client_endpoint("https://127.0.0.1:7070", &files).expect_err("no key");
        assert!(
            matches!(&error, TlsError::CertWithoutKey { cert } if *cert == certs.client_cert),
            "{error:?}"
        );
        Ok(())
    }

    #[test]
    fn a_client_key_that_does_not_match_its_certificate_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let files = ClientTlsFiles {
            key: Some(certs.server_key.clone()),
            ..certs.client_files_with_identity()
        };
        let error = client_endpoint("https://127.0.0.1:7070", &files).expect_err("wrong key");
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        Ok(())
    }

    #[test]
    fn a_missing_ca_file_is_named() -> anyhow::Result<()> {
        let (dir, _certs) = generated()?;
        let missing = dir.path().join("absent-ca.crt");
        let files = ClientTlsFiles {
            ca: Some(missing.clone()),
            ..ClientTlsFiles::default()
        };
        let error = client_endpoint("https://127.0.0.1:7070", &files).expect_err("no CA file");
        assert!(
            matches!(&error, TlsError::Read { role: FileRole::ServerCa, path, .. } if *path == missing),
            "{error:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn https_against_a_plaintext_server_fails_with_a_tls_error() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let server = HealthServer::start(None).await?;
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files())?;
        let error = health_status(endpoint)
            .await
            .expect_err("https:// never falls back to plaintext");
        assert!(is_tls_failure(&error), "{error:?}");
        Ok(())
    }

    #[tokio::test]
    async fn https_without_a_ca_file_trusts_only_the_public_roots() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let tls = crate::ServerTls::load(certs.server_files())?;
        let server = HealthServer::start(Some(std::sync::Arc::new(tls))).await?;
        let endpoint = client_endpoint(&server.https_url(), &ClientTlsFiles::default())?;
        let error = health_status(endpoint)
            .await
            .expect_err("a private CA is not among the webpki roots");
        assert!(is_tls_failure(&error), "{error:?}");
        // The same server over plaintext: refused too, never a downgrade.
        let endpoint = client_endpoint(&server.http_url(), &ClientTlsFiles::default())?;
        assert!(health_status(endpoint).await.is_err());
        Ok(())
    }
}
