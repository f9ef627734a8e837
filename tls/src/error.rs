//! The one error type of this crate: each variant names the file and what is wrong with it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Which file of a TLS setup an error is about, so a message says
/// "the server private key file /etc/volley/tls.key" rather than a bare path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The server's certificate chain (`ServerTlsFiles::cert`).
    ServerCertificate,
    /// The server's private key (`ServerTlsFiles::key`).
    ServerKey,
    /// The CA a server requires client certificates to chain to (`ServerTlsFiles::client_ca`).
    ClientCa,
    /// The CA a client trusts for the server's certificate (`ClientTlsFiles::ca`).
    ServerCa,
    /// The client's certificate chain (`ClientTlsFiles::cert`).
    ClientCertificate,
    /// The client's private key (`ClientTlsFiles::key`).
    ClientKey,
}

impl fmt::Display for FileRole {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            FileRole::ServerCertificate => "server certificate",
            FileRole::ServerKey => "server private key",
            FileRole::ClientCa => "client CA",
            FileRole::ServerCa => "CA",
            FileRole::ClientCertificate => "client certificate",
            FileRole::ClientKey => "client private key",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read the {role} file {path}: {source}")]
    Read {
        role: FileRole,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {role} file {path} is not valid PEM: {source}")]
    Pem {
        role: FileRole,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "the {role} file {path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)"
    )]
    NoCertificate { role: FileRole, path: PathBuf },
    #[error("the {role} file {path} holds a certificate that cannot be used: {source}")]
    BadCertificate {
        role: FileRole,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the {role} file {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey { role: FileRole, path: PathBuf },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the private key in {key} cannot be used with the certificate in {cert}: {source}")]
    BadKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CA file {path} cannot verify client certificates: {source}")]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the client certificate {cert} is given without its private key file")]
    CertWithoutKey { cert: PathBuf },
    #[error("the client private key {key} is given without its certificate file")]
    KeyWithoutCert { key: PathBuf },
    #[error("{url} is plaintext but TLS files are given: use an https:// url to connect with TLS")]
    PlaintextUrlWithTls { url: String },
    #[error("invalid url {url}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot configure TLS for {url}: {source}")]
    Endpoint {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot build the TLS configuration: {source}")]
    Config {
        #[source]
        source: rustls::Error,
    },
}
