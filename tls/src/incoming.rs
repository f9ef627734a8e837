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
