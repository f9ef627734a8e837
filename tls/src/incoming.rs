//! The stream of accepted connections tonic's `serve_with_incoming_shutdown` takes, plaintext or TLS.
//!
//! TLS handshakes run as tasks of a `JoinSet` owned by the stream, so one
//! slow or silent client delays only itself; each has a deadline, and at
//! most [`MAX_PENDING_HANDSHAKES`] run at once (beyond that the stream stops
//! accepting until one ends, leaving the backlog to the kernel). Dropping
//! the stream (tonic does on shutdown) aborts the handshakes in flight.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::future::Either;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::pem;
use crate::server::ServerTls;

/// Handshakes in flight at once, at most, per listener.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// What a handler can learn about the connection a request came on:
/// `PeerInfo::of(&request)`. (With this stream, tonic's own
/// `Request::remote_addr` is `None`; read `remote_addr` here instead.)
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerInfo {
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// With mTLS, who the client certificate names: its subject
    /// (`CN=worker-1`), or its first DNS/URI SAN when the subject is empty.
    pub client_identity: Option<Arc<str>>,
}

impl PeerInfo {
    /// The connection info of a request served over [`server_incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

/// One accepted connection: a TCP stream, or a TLS stream whose handshake
/// has completed.
pub struct ServerConnection {
    io: Io,
    info: PeerInfo,
}

enum Io {
    Plaintext(TcpStream),
    // Boxed: a rustls session is about a kilobyte, a TcpStream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerConnection {
    pub fn peer_info(&self) -> &PeerInfo {
        &self.info
    }
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerConnection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for ServerConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plaintext(stream) => Pin::new(stream).poll_read(context, buffer),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for ServerConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plaintext(stream) => Pin::new(stream).poll_write(context, buffer),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plaintext(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(context, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plaintext(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plaintext(stream) => Pin::new(stream).poll_flush(context),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plaintext(stream) => Pin::new(stream).poll_shutdown(context),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

/// The connections accepted on `listener`, for
/// `tonic::transport::Server::serve_with_incoming_shutdown`: plaintext when
/// `tls` is `None`, otherwise only those whose TLS handshake completed.
/// Every socket gets TCP_NODELAY (tonic's `tcp_nodelay` does not reach
/// sockets accepted outside it; without it small messages wait out Nagle
/// and the peer's delayed ack, ~40 ms).
pub fn server_incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> impl Stream<Item = io::Result<ServerConnection>> + Send + 'static {
    match tls {
        None => Either::Left(futures::stream::unfold(listener, |listener| async move {
            let accepted = accept_plaintext(&listener).await;
            Some((accepted, listener))
        })),
        Some(tls) => Either::Right(futures::stream::unfold(
            TlsIncoming {
                listener,
                tls,
                handshakes: JoinSet::new(),
                reloads: JoinSet::new(),
            },
            |mut incoming| async move {
                let accepted = incoming.next().await;
                Some((accepted, incoming))
            },
        )),
    }
}

async fn accept_plaintext(listener: &TcpListener) -> io::Result<ServerConnection> {
    let (stream, remote_addr) = listener.accept().await?;
    stream.set_nodelay(true)?;
    Ok(ServerConnection {
        info: PeerInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote_addr),
            tls: false,
            client_identity: None,
        },
        io: Io::Plaintext(stream),
    })
}

struct TlsIncoming {
    listener: TcpListener,
    tls: Arc<ServerTls>,
    /// `None` for a handshake that failed or timed out (already logged).
    handshakes: JoinSet<Option<ServerConnection>>,
    /// At most one file check at a time (`ServerTls::claim_reload`).
    reloads: JoinSet<()>,
}

impl TlsIncoming {
    async fn next(&mut self) -> io::Result<ServerConnection> {
        loop {
            tokio::select! {
                // Hand over finished handshakes before accepting more: a
                // client that is ready should not wait behind new arrivals.
                biased;
                Some(joined) = self.handshakes.join_next() => match joined {
                    Ok(Some(connection)) => return Ok(connection),
                    Ok(None) => {}
                    Err(join_error) => {
                        tracing::warn!(error = %join_error, "a TLS handshake task failed");
                    }
                },
                Some(joined) = self.reloads.join_next() => {
                    if let Err(join_error) = joined {
                        tracing::warn!(error = %join_error, "a TLS file check failed");
                    }
                }
                accepted = self.listener.accept(),
                    if self.handshakes.len() < MAX_PENDING_HANDSHAKES =>
                {
                    let (stream, remote_addr) = accepted?;
                    if self.tls.claim_reload(Instant::now()) {
                        let tls = Arc::clone(&self.tls);
                        self.reloads.spawn_blocking(move || tls.reload());
                    }
                    self.handshakes.spawn(handshake(
                        TlsAcceptor::from(self.tls.config()),
                        stream,
                        remote_addr,
                        self.tls.handshake_timeout(),
                    ));
                }
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote_addr: SocketAddr,
    timeout: Duration,
) -> Option<ServerConnection> {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote_addr, %error, "dropping a connection: cannot set TCP_NODELAY");
        return None;
    }
    let local_addr = stream.local_addr().ok();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%remote_addr, %error, "TLS handshake failed");
            return None;
        }
        Err(_elapsed) => {
            tracing::debug!(%remote_addr, ?timeout, "TLS handshake timed out");
            return None;
        }
    };
    let client_identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certificates| certificates.first())
        .and_then(pem::identity)
        .map(Arc::from);
    Some(ServerConnection {
        info: PeerInfo {
            local_addr,
            remote_addr: Some(remote_addr),
            tls: true,
            client_identity,
        },
        io: Io::Tls(Box::new(stream)),
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::client::client_endpoint;
    use crate::server::ServerTlsFiles;
    use crate::test_support::{
        DEADLINE, HealthServer, SERVING, SecretDir, health_status, is_tls_failure, leaf_of,
        raw_tls_connect,
    };
    use crate::testing::{CLIENT_COMMON_NAME, TestCerts};

    fn generated() -> anyhow::Result<(tempfile::TempDir, TestCerts)> {
        let dir = tempfile::tempdir()?;
        let certs = TestCerts::generate(dir.path())?;
        Ok((dir, certs))
    }

    async fn tls_server(files: ServerTlsFiles) -> anyhow::Result<HealthServer> {
        HealthServer::start(Some(Arc::new(ServerTls::load(files)?))).await
    }

    #[tokio::test]
    async fn without_tls_the_stream_serves_plaintext() -> anyhow::Result<()> {
        let server = HealthServer::start(None).await?;
        let endpoint = client_endpoint(&server.addr.to_string(), &Default::default())?;
        assert_eq!(health_status(endpoint).await?, SERVING);
        Ok(())
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_gets_serving_over_tls() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let server = tls_server(certs.server_files()).await?;
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files())?;
        assert_eq!(health_status(endpoint).await?, SERVING);
        Ok(())
    }

    #[tokio::test]
    async fn a_client_trusting_another_ca_fails_the_handshake() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let (_other_dir, other_certs) = generated()?;
        let server = tls_server(certs.server_files()).await?;
        let endpoint = client_endpoint(&server.https_url(), &other_certs.client_files())?;
        let error = health_status(endpoint)
            .await
            .expect_err("the server's certificate is not from the client's CA");
        assert!(is_tls_failure(&error), "{error:?}");
        Ok(())
    }

    #[tokio::test]
    async fn with_a_client_ca_a_client_without_a_certificate_is_refused() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let server = tls_server(certs.server_files_with_client_ca()).await?;
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files())?;
        let error = health_status(endpoint)
            .await
            .expect_err("mTLS requires a client certificate");
        assert!(is_tls_failure(&error), "{error:?}");
        Ok(())
    }

    #[tokio::test]
    async fn with_a_client_ca_a_client_certificate_from_another_ca_is_refused() -> anyhow::Result<()>
    {
        let (_dir, certs) = generated()?;
        let (_other_dir, other_certs) = generated()?;
        let server = tls_server(certs.server_files_with_client_ca()).await?;
        let files = crate::ClientTlsFiles {
            ca: Some(certs.ca_cert.clone()),
            cert: Some(other_certs.client_cert.clone()),
            key: Some(other_certs.client_key.clone()),
        };
        let error = health_status(client_endpoint(&server.https_url(), &files)?)
            .await
            .expect_err("the client certificate is not from the client CA");
        assert!(is_tls_failure(&error), "{error:?}");
        Ok(())
    }

    #[tokio::test]
    async fn with_a_client_ca_a_client_certificate_from_it_gets_serving() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let server = tls_server(certs.server_files_with_client_ca()).await?;
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files_with_identity())?;
        assert_eq!(health_status(endpoint).await?, SERVING);
        Ok(())
    }

    #[tokio::test]
    async fn the_connect_info_names_the_client_certificate() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let tls = Arc::new(ServerTls::load(certs.server_files_with_client_ca())?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut incoming = std::pin::pin!(server_incoming(listener, Some(tls)));
        let ca = certs.ca_cert.clone();
        let (client_cert, client_key) = (certs.client_cert.clone(), certs.client_key.clone());
        // The client holds its stream until the server has handed over the
        // connection, so the server's side of the handshake completes.
        let client = tokio::spawn(async move {
            raw_tls_connect(addr, &ca, Some((&client_cert, &client_key))).await
        });
        let connection = tokio::time::timeout(DEADLINE, incoming.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))??;
        client.await??;
        let info = connection.connect_info();
        assert!(info.tls);
        assert_eq!(info.remote_addr.map(|remote| remote.ip()), Some(addr.ip()));
        assert_eq!(
            info.client_identity.as_deref(),
            Some(format!("CN={CLIENT_COMMON_NAME}").as_str())
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_the_handshakes_of_others() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        // A deadline far beyond the test's: a server that handshook one
        // client at a time would make the health check below time out.
        let tls = ServerTls::load(certs.server_files())?
            .with_handshake_timeout(Duration::from_secs(3600));
        let server = HealthServer::start(Some(Arc::new(tls))).await?;
        let _silent = TcpStream::connect(server.addr).await?;
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files())?;
        assert_eq!(health_status(endpoint).await?, SERVING);
        Ok(())
    }

    #[tokio::test]
    async fn a_handshake_that_outlives_its_timeout_is_dropped() -> anyhow::Result<()> {
        let (_dir, certs) = generated()?;
        let tls = ServerTls::load(certs.server_files())?
            .with_handshake_timeout(Duration::from_millis(50));
        let server = HealthServer::start(Some(Arc::new(tls))).await?;
        let mut silent = TcpStream::connect(server.addr).await?;
        let mut buffer = [0_u8; 16];
        // The server closes the socket: end of file (or a reset).
        let read = tokio::time::timeout(DEADLINE, silent.read(&mut buffer)).await?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        Ok(())
    }

    #[tokio::test]
    async fn new_connections_see_a_rotated_certificate_and_a_broken_one_keeps_the_last_good()
    -> anyhow::Result<()> {
        let (dir, certs) = generated()?;
        let secret_root = dir.path().join("secret");
        std::fs::create_dir(&secret_root)?;
        let mut secret = SecretDir::new(
            &secret_root,
            &std::fs::read(&certs.server_cert)?,
            &std::fs::read(&certs.server_key)?,
        )?;
        let tls = Arc::new(
            ServerTls::load(ServerTlsFiles {
                cert: secret.cert(),
                key: secret.key(),
                client_ca: None,
            })?
            .with_reload_interval(Duration::ZERO),
        );
        let server = HealthServer::start(Some(Arc::clone(&tls))).await?;
        let original = leaf_of(&certs.server_cert)?;
        let (served, _stream) = raw_tls_connect(server.addr, &certs.ca_cert, None).await?;
        assert_eq!(served, original);

        let rotated_cert = dir.path().join("rotated.crt");
        let rotated_key = dir.path().join("rotated.key");
        certs.issue_server_cert("rotated", &rotated_cert, &rotated_key)?;
        secret.swap(
            &std::fs::read(&rotated_cert)?,
            &std::fs::read(&rotated_key)?,
        )?;
        let rotated = leaf_of(&rotated_cert)?;
        // A connection triggers the check; a later one gets the result.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (served, _stream) = raw_tls_connect(server.addr, &certs.ca_cert, None).await?;
            if served == rotated {
                break;
            }
            assert_eq!(served, original);
            assert!(
                tokio::time::Instant::now() < deadline,
                "never served the rotated certificate"
            );
        }
        // The rotated certificate also passes tonic's verification.
        let endpoint = client_endpoint(&server.https_url(), &certs.client_files())?;
        assert_eq!(health_status(endpoint).await?, SERVING);

        secret.swap(b"not a certificate", &std::fs::read(&rotated_key)?)?;
        let (_, rejected_before) = tls.reload_counts();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tls.reload_counts().1 == rejected_before {
            let (served, _stream) = raw_tls_connect(server.addr, &certs.ca_cert, None).await?;
            assert_eq!(served, rotated);
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broken files were never checked"
            );
        }
        let (served, _stream) = raw_tls_connect(server.addr, &certs.ca_cert, None).await?;
        assert_eq!(
            served, rotated,
            "a broken rotation keeps the last good certificate"
        );
        Ok(())
    }
}
