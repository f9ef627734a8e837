//! Certificates for tests, generated in-process with rcgen: a CA, a server certificate for 127.0.0.1 and localhost, and a client certificate.
//!
//! Tests of other crates enable the `test-certs` feature in their
//! dev-dependencies; no certificate file is ever checked in.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::client::ClientTlsFiles;
use crate::server::ServerTlsFiles;

/// The common name of the server certificate [`TestCerts::generate`] writes.
pub const SERVER_COMMON_NAME: &str = "volley test server";
/// The common name of the client certificate [`TestCerts::generate`] writes.
pub const CLIENT_COMMON_NAME: &str = "volley test client";

#[derive(Debug, thiserror::Error)]
pub enum TestCertsError {
    #[error("cannot generate a test certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// PEM files in one directory, and the CA that signed them (to issue more,
/// e.g. a rotated server certificate).
pub struct TestCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCerts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestCerts")
            .field("ca_cert", &self.ca_cert)
            .field("server_cert", &self.server_cert)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

impl TestCerts {
    /// Generates a CA, a server certificate (SANs `127.0.0.1`, `localhost`;
    /// CN [`SERVER_COMMON_NAME`]) and a client certificate (CN
    /// [`CLIENT_COMMON_NAME`]), both signed by the CA, and writes them to
    /// `dir` as `ca.crt`, `server.crt`, `server.key`, `client.crt`,
    /// `client.key`.
    pub fn generate(dir: &Path) -> Result<TestCerts, TestCertsError> {
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "volley test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let certs = TestCerts {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            issuer: Issuer::new(ca_params, ca_key),
        };
        write(&certs.ca_cert, &ca.pem())?;
        certs.issue_server_cert(SERVER_COMMON_NAME, &certs.server_cert, &certs.server_key)?;
        certs.issue_client_cert(CLIENT_COMMON_NAME, &certs.client_cert, &certs.client_key)?;
        Ok(certs)
    }

    /// Writes a new server certificate for `127.0.0.1` and `localhost`,
    /// signed by this CA, with a fresh key.
    pub fn issue_server_cert(
        &self,
        common_name: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<(), TestCertsError> {
        self.issue(
            common_name,
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
            cert,
            key,
        )
    }

    /// Writes a new client certificate signed by this CA, with a fresh key.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<(), TestCertsError> {
        self.issue(
            common_name,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            cert,
            key,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        alternative_names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        cert: &Path,
        key: &Path,
    ) -> Result<(), TestCertsError> {
        let mut params = CertificateParams::new(alternative_names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key_pair = KeyPair::generate()?;
        let certificate = params.signed_by(&key_pair, &self.issuer)?;
        write(cert, &certificate.pem())?;
        write(key, &key_pair.serialize_pem())
    }

    /// The server's files, without client authentication.
    pub fn server_files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: None,
        }
    }

    /// The server's files, requiring client certificates signed by the CA.
    pub fn server_files_with_client_ca(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            client_ca: Some(self.ca_cert.clone()),
            ..self.server_files()
        }
    }

    /// A client that trusts the CA and has no certificate of its own.
    pub fn client_files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: Some(self.ca_cert.clone()),
            cert: None,
            key: None,
        }
    }

    /// A client that trusts the CA and presents the client certificate.
    pub fn client_files_with_identity(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: Some(self.ca_cert.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<(), TestCertsError> {
    std::fs::write(path, contents).map_err(|source| TestCertsError::Write {
        path: path.to_owned(),
        source,
    })
}
