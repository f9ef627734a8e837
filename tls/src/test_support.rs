//! Helpers for this crate's socket tests: a grpc.health.v1 server over `server_incoming`, clients, and error classification.

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::error::FileRole;
use crate::{ServerTls, pem, server_incoming};

/// Generous bound for anything a test waits on; reaching it fails the test.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A health server on 127.0.0.1, stopped on drop.
pub(crate) struct HealthServer {
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl HealthServer {
    pub(crate) async fn start(tls: Option<Arc<ServerTls>>) -> anyhow::Result<HealthServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_reporter, health_service) = tonic_health::server::health_reporter();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    server_incoming(listener, tls),
                    shutdown.clone().cancelled_owned(),
                ),
        );
        Ok(HealthServer {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    pub(crate) fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects and asks for the overall health; the status as the enum's i32.
pub(crate) async fn health_status(endpoint: Endpoint) -> anyhow::Result<i32> {
    let check = async {
        let channel = endpoint.connect().await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        anyhow::Ok(response.into_inner().status)
    };
    tokio::time::timeout(DEADLINE, check).await?
}

pub(crate) const SERVING: i32 =
    tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

/// Whether a TLS failure is somewhere in the chain: a rustls error,
/// including inside the `io::Error`s that carry it (whose `source()` skips
/// the error they wrap); or, for an alert the server sent after the
/// handshake (TLS 1.3 checks the client certificate then), the
/// `InvalidData` io::Error into which h2 flattens it, keeping only its text.
pub(crate) fn is_tls_failure(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        holds_rustls_error(cause)
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io_error| {
                    io_error.kind() == std::io::ErrorKind::InvalidData
                        && io_error.to_string().contains("alert")
                })
    })
}

fn holds_rustls_error(error: &(dyn Error + 'static)) -> bool {
    if error.downcast_ref::<rustls::Error>().is_some() {
        return true;
    }
    if let Some(io_error) = error.downcast_ref::<std::io::Error>()
        && let Some(inner) = io_error.get_ref()
        && holds_rustls_error(inner)
    {
        return true;
    }
    error.source().is_some_and(holds_rustls_error)
}

/// Completes a TLS handshake with the server at `addr` trusting `ca`
/// (presenting `identity` when given) and returns the server's leaf
/// certificate and the open stream.
pub(crate) async fn raw_tls_connect(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<(
    CertificateDer<'static>,
    tokio_rustls::client::TlsStream<TcpStream>,
)> {
    let roots = pem::root_store(FileRole::ServerCa, ca, &std::fs::read(ca)?)?;
    let builder = rustls::ClientConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            pem::certificates(FileRole::ClientCertificate, cert, &std::fs::read(cert)?)?,
            pem::private_key(FileRole::ClientKey, key, &std::fs::read(key)?)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certificates| certificates.first())
            .ok_or_else(|| anyhow::anyhow!("the server sent no certificate"))?
            .clone()
            .into_owned();
        anyhow::Ok((leaf, stream))
    };
    tokio::time::timeout(DEADLINE, connect).await?
}

/// The leaf certificate of a PEM file.
pub(crate) fn leaf_of(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    let mut certificates =
        pem::certificates(FileRole::ServerCertificate, path, &std::fs::read(path)?)?;
    Ok(certificates.remove(0))
}

/// A directory laid out like a mounted Kubernetes Secret: `tls.crt` and
/// `tls.key` are symlinks into `..data`, itself a symlink to a timestamped
/// directory; an update writes a new directory and renames a new `..data`
/// symlink over the old one, as the kubelet does for cert-manager.
pub(crate) struct SecretDir {
    root: std::path::PathBuf,
    generation: u32,
}

impl SecretDir {
    pub(crate) fn new(root: &Path, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<SecretDir> {
        let mut secret = SecretDir {
            root: root.to_owned(),
            generation: 0,
        };
        secret.swap(cert_pem, key_pem)?;
        std::os::unix::fs::symlink("..data/tls.crt", secret.cert())?;
        std::os::unix::fs::symlink("..data/tls.key", secret.key())?;
        Ok(secret)
    }

    pub(crate) fn cert(&self) -> std::path::PathBuf {
        self.root.join("tls.crt")
    }

    pub(crate) fn key(&self) -> std::path::PathBuf {
        self.root.join("tls.key")
    }

    /// Atomically replaces both files.
    pub(crate) fn swap(&mut self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        self.generation += 1;
        let generation = format!("..generation_{}", self.generation);
        std::fs::create_dir(self.root.join(&generation))?;
        std::fs::write(self.root.join(&generation).join("tls.crt"), cert_pem)?;
        std::fs::write(self.root.join(&generation).join("tls.key"), key_pem)?;
        let staged = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &staged)?;
        std::fs::rename(&staged, self.root.join("..data"))?;
        Ok(())
    }
}
