//! Test harness for Volley: a real `redis-server` (from `PATH`) on a free
//! port, with its own temp dir, killed on drop — so every test gets a private
//! database and never touches a shared Redis (no `FLUSHDB`) — and a TCP
//! balancer standing in for a Kubernetes Service in front of coordinators.
//!
//! A server may speak TLS only and want a password: its CA, server and
//! client certificates are made in-process with `rcgen` when it starts and
//! written into its temp dir (no key material in git).
//!
//! `RedisServer` is blocking (`std::process`, `std::net`), so it works from
//! sync tests and from async tests alike: starting a server takes a few
//! milliseconds of polling, which is fine to block a test runtime on.
//! `TcpBalancer` runs on its own thread with its own Tokio runtime, so it
//! serves sync and async tests alike and outlives any test runtime.
//!
//! # Layout
//! - [`RedisServer`]: start (optionally with an append-only file, TLS and a
//!   password), `url()`, `kill()`/`stop()`, `restart()` (empty),
//!   `start_again()` (reloads the AOF), `pause()`/`resume()`, kill on `Drop`.
//! - [`TestCertificates`]: a CA with a server certificate (127.0.0.1,
//!   localhost) and a client certificate, as PEM files.
//! - [`TcpBalancer`]: round-robin TCP proxy over backends that may come and
//!   go, stopped on `Drop`.
//! - [`poll`]: `wait_until`, polling a condition under a hang guard.
//! - [`free_port`]: a port the OS considered free a moment ago.
//! - [`ops`] (feature `proto`): `op(id, kind, args)`.
//! - [`fake_coordinator`] (feature `proto`): a `WorkerService` that hands
//!   each worker session to the test.

#[cfg(feature = "proto")]
pub mod fake_coordinator;
#[cfg(feature = "proto")]
pub mod ops;
pub mod poll;

#[cfg(feature = "proto")]
pub use ops::op;
pub use poll::wait_until;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a started server may take to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How many free ports we try before giving up (another process may grab the
/// port between our probe and redis-server's bind).
const PORT_ATTEMPTS: u32 = 5;
/// Between two `PING` probes while waiting for readiness.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Distinguishes the temp dirs of servers started by one process.
static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

/// How a [`RedisServer`] keeps its data and whom it lets in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Append-only file on, fsynced before every reply (`appendonly yes`,
    /// `appendfsync always`), in the server's own dir: a server killed with
    /// SIGKILL and started again with [`RedisServer::start_again`] has every
    /// write it acknowledged. Off: nothing is persisted.
    pub aof: bool,
    /// Speak TLS only (`--port 0 --tls-port <port>`), with certificates made
    /// for this server ([`RedisServer::certificates`]); `url()` is then
    /// `rediss://`.
    pub tls: bool,
    /// With `tls`: refuse clients without a certificate signed by the
    /// server's CA (`--tls-auth-clients yes`); otherwise a client
    /// certificate is optional.
    pub require_client_cert: bool,
    /// Want this password (`--requirepass`) from every client; `url()`
    /// carries it. Keep it URL-safe (letters, digits).
    pub password: Option<String>,
}

impl RedisOptions {
    /// TLS with an optional client certificate, and `password` required.
    pub fn tls_with_password(password: impl Into<String>) -> RedisOptions {
        RedisOptions {
            tls: true,
            password: Some(password.into()),
            ..RedisOptions::default()
        }
    }
}

/// A `redis-server` child process on `127.0.0.1:<port>`, with its data in
/// its own temp dir (removed on drop).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Holds the logs, `data/` (the server's `--dir`) and `tls/`.
    dir: PathBuf,
    options: RedisOptions,
    /// With `options.tls`: the files in `dir/tls/`.
    certificates: Option<TestCertificates>,
}

impl RedisServer {
    /// Starts a server without persistence on a free port and waits until it
    /// answers `PING`.
    pub fn start() -> anyhow::Result<RedisServer> {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts a server with `options` on a free port and waits until it
    /// answers `PING`.
    pub fn start_with(options: RedisOptions) -> anyhow::Result<RedisServer> {
        let serial = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("volley-redis-{}-{}", std::process::id(), serial));
        let data_dir = data_dir(&dir);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let certificates = if options.tls {
            let tls_dir = dir.join("tls");
            let generated = std::fs::create_dir_all(&tls_dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| TestCertificates::generate(&tls_dir).map_err(anyhow::Error::from));
            match generated {
                Ok(certificates) => Some(certificates),
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(error);
                }
            }
        } else {
            None
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let launch = Launch {
                port,
                dir: &dir,
                options: &options,
                certificates: certificates.as_ref(),
            };
            match launch.spawn_ready() {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
                        options,
                        certificates,
                    });
                }
                // Most likely a port clash: pick another port.
                Err(error) => last_error = Some(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:<port>`; with TLS `rediss://`, with a password
    /// `…://:<password>@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        match &self.options.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// [`url`](RedisServer::url) without the password (for a test that
    /// passes the password another way).
    pub fn url_without_password(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The password the server wants, if any.
    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// The CA, server and client certificates of a TLS server.
    pub fn certificates(&self) -> Option<&TestCertificates> {
        self.certificates.as_ref()
    }

    /// The PEM CA certificate a client must trust (TLS servers only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.certificates.as_ref().map(|tls| tls.ca_cert.as_path())
    }

    /// A PEM client certificate signed by the server's CA (TLS only).
    pub fn client_cert_path(&self) -> Option<&Path> {
        self.certificates
            .as_ref()
            .map(|tls| tls.client_cert.as_path())
    }

    /// The client certificate's PEM private key (TLS only).
    pub fn client_key_path(&self) -> Option<&Path> {
        self.certificates
            .as_ref()
            .map(|tls| tls.client_key.as_path())
    }

    fn launch(&self) -> Launch<'_> {
        Launch {
            port: self.port,
            dir: &self.dir,
            options: &self.options,
            certificates: self.certificates.as_ref(),
        }
    }

    /// The server's process id, while it runs (to SIGSTOP it, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no clean shutdown, no save) and reaps
    /// it. Its data dir stays until drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The same as [`kill`](RedisServer::kill), named to pair with
    /// [`start_again`](RedisServer::start_again): SIGKILL, keep the data dir.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kills the server if it runs and starts a fresh one on the same port,
    /// empty even with an append-only file (its data dir is wiped), waiting
    /// until it answers `PING`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let data_dir = data_dir(&self.dir);
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("wiping {}", data_dir.display()))?;
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        self.child = Some(self.launch().spawn_ready()?);
        Ok(())
    }

    /// Starts the server again on the same port with the same data dir
    /// (killing it first if it runs), so a server with an append-only file
    /// reloads it: a crash and a restart. Waits until it answers `PING`,
    /// which Redis does only once the file is loaded.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Some(self.launch().spawn_ready()?);
        Ok(())
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is
    /// answered, until [`resume`](RedisServer::resume).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Thaws a paused server with SIGCONT and waits until it answers `PING`.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        let deadline = Instant::now() + READY_DEADLINE;
        while !self.launch().ping() {
            if Instant::now() >= deadline {
                bail!(
                    "redis-server on port {} did not answer PING within {READY_DEADLINE:?} after SIGCONT",
                    self.port
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// Sends `SIG<name>` with kill(1): the workspace denies `unsafe`, so no
    /// direct libc call.
    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("redis-server on port {} is not running", self.port);
        };
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .context("running kill(1)")?;
        if !status.success() {
            bail!("kill -{name} {pid} failed: {status}");
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (paused) process too.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a server under `dir` keeps its data (`--dir`); logs stay in `dir`
/// so that `restart` can wipe the data alone.
fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// How long the balancer waits for one backend to accept a connection
/// before it tries the next (a refused connection fails at once).
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP load balancer on `127.0.0.1:<free port>` for tests, standing in for
/// a Kubernetes Service in front of several coordinators.
///
/// Each accepted connection goes to the next backend in round-robin order
/// that accepts it (each tried at most once; none: the connection is
/// dropped), then bytes are copied both ways until either side closes. It
/// runs on its own thread and Tokio runtime; dropping it closes the port
/// and every connection through it.
#[derive(Debug)]
pub struct TcpBalancer {
    addr: SocketAddr,
    /// Read for each new connection, so a change applies to the next one.
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpBalancer {
    /// Starts balancing over `backends` (which need not be up yet).
    pub fn start(backends: Vec<SocketAddr>) -> anyhow::Result<TcpBalancer> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the balancer")?;
        listener
            .set_nonblocking(true)
            .context("making the balancer's listener non-blocking")?;
        let addr = listener.local_addr()?;
        // Built here so that a failure is this call's error; moved into the
        // thread, and dropped there to close every proxied connection.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the balancer's runtime")?;
        let backends = Arc::new(Mutex::new(backends));
        let (shutdown, shutdown_received) = tokio::sync::oneshot::channel();
        let thread_backends = Arc::clone(&backends);
        let thread = std::thread::Builder::new()
            .name(format!("tcp-balancer-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(balance(listener, thread_backends, shutdown_received));
            })
            .context("spawning the balancer's thread")?;
        Ok(TcpBalancer {
            addr,
            backends,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the backends for connections accepted from now on;
    /// connections already proxied keep their backend.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *lock(&self.backends) = backends;
    }

    pub fn backends(&self) -> Vec<SocketAddr> {
        lock(&self.backends).clone()
    }
}

impl Drop for TcpBalancer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The backends, even if a panicking holder poisoned the lock (a plain list
/// cannot be left half-written).
fn lock(backends: &Mutex<Vec<SocketAddr>>) -> std::sync::MutexGuard<'_, Vec<SocketAddr>> {
    backends
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The balancer's accept loop, until `shutdown` fires or its sender drops.
async fn balance(
    listener: TcpListener,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut next_backend: usize = 0;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let Ok((client, _)) = accepted else {
            // Out of file descriptors, say: let the next accept try again.
            continue;
        };
        let candidates = {
            let backends = lock(&backends);
            let count = backends.len();
            let start = if count == 0 { 0 } else { next_backend % count };
            (0..count)
                .map(|offset| backends[(start + offset) % count])
                .collect::<Vec<_>>()
        };
        next_backend = next_backend.wrapping_add(1);
        connections.spawn(proxy(client, candidates));
    }
    // Returning drops `connections`, aborting every proxied connection.
}

/// Connects `client` to the first of `candidates` that accepts and copies
/// bytes both ways until either side closes; drops `client` if none does.
async fn proxy(mut client: tokio::net::TcpStream, candidates: Vec<SocketAddr>) {
    for backend_addr in candidates {
        let connect = tokio::net::TcpStream::connect(backend_addr);
        let Ok(Ok(mut backend)) = tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, connect).await
        else {
            continue;
        };
        // gRPC sends small frames that must not wait for Nagle.
        let _ = client.set_nodelay(true);
        let _ = backend.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        return;
    }
}

/// A port the OS considered free a moment ago (bind port 0, read, drop).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// What a redis-server process is started with.
struct Launch<'a> {
    port: u16,
    dir: &'a Path,
    options: &'a RedisOptions,
    certificates: Option<&'a TestCertificates>,
}

impl Launch<'_> {
    /// Spawns redis-server on `port` (data in `dir/data`, log in `dir`) and
    /// polls `PING` until it answers, the process exits (e.g. port taken)
    /// or the deadline passes.
    fn spawn_ready(&self) -> anyhow::Result<Child> {
        let port = self.port;
        let log_file = self.dir.join(format!("redis-{port}.log"));
        let (appendonly, appendfsync) = if self.options.aof {
            ("yes", "always")
        } else {
            ("no", "everysec")
        };
        let mut command = Command::new("redis-server");
        command
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(appendonly)
            .arg("--appendfsync")
            .arg(appendfsync)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(data_dir(self.dir))
            .arg("--logfile")
            .arg(&log_file);
        match self.certificates {
            Some(tls) => {
                let auth_clients = if self.options.require_client_cert {
                    "yes"
                } else {
                    "no"
                };
                command
                    .arg("--port")
                    .arg("0")
                    .arg("--tls-port")
                    .arg(port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.server_cert)
                    .arg("--tls-key-file")
                    .arg(&tls.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca_cert)
                    .arg("--tls-auth-clients")
                    .arg(auth_clients);
            }
            None => {
                command.arg("--port").arg(port.to_string());
            }
        }
        if let Some(password) = &self.options.password {
            command.arg("--requirepass").arg(password);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server (is it on PATH?)")?;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                bail!("redis-server on port {port} exited with {status}: {log}");
            }
            if self.ping() {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("redis-server on port {port} did not answer PING within {READY_DEADLINE:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// True when the server answers `PING`: a plain server over a bare
    /// socket, one with TLS or a password through the redis crate (with the
    /// server's CA, the client certificate and the password).
    fn ping(&self) -> bool {
        if self.certificates.is_none() && self.options.password.is_none() {
            return ping(self.port);
        }
        self.ping_with_client().is_ok()
    }

    fn ping_with_client(&self) -> anyhow::Result<()> {
        let scheme = if self.certificates.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(format!(
            "{scheme}://127.0.0.1:{}",
            self.port
        ))?;
        if let Some(password) = &self.options.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match self.certificates {
            Some(tls) => {
                install_crypto_provider();
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: Some(redis::ClientTlsConfig {
                            client_cert: std::fs::read(&tls.client_cert)?,
                            client_key: std::fs::read(&tls.client_key)?,
                        }),
                        root_cert: Some(std::fs::read(&tls.ca_cert)?),
                    },
                )?
            }
            None => redis::Client::open(info)?,
        };
        let mut connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
        connection.set_read_timeout(Some(Duration::from_millis(500)))?;
        let reply: String = redis::cmd("PING").query(&mut connection)?;
        if reply != "PONG" {
            bail!("PING answered {reply}");
        }
        Ok(())
    }
}

/// rustls needs a process-wide crypto provider; the workspace builds it
/// with `ring` only. Installing again fails harmlessly.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// PEM files of a test CA, a server certificate it signed (SANs
/// `127.0.0.1` and `localhost`) and a client certificate it signed, each
/// with its key: volley-tls's, so Redis and gRPC tests make them one way.
pub use volley_tls::testing::TestCerts as TestCertificates;

/// True when a server on `port` answers `+PONG` to an inline `PING`.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match stream.read(&mut reply[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(count) => read += count,
        }
    }
    &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start().expect("start");
        assert!(ping(server.port()));
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        let port = server.port();
        server.kill();
        assert!(!ping(port));
        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert!(ping(port));
    }

    /// Sends one command as RESP and reads one reply line (enough for
    /// `SET`, and for `GET` of a short value: `$<len>` then the value).
    fn command(port: u16, parts: &[&str]) -> String {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut request = format!("*{}\r\n", parts.len());
        for part in parts {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        stream.write_all(request.as_bytes()).expect("write");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        // Read until the reply is complete: one line, or a bulk header and
        // its value line.
        let mut lines = 0;
        while stream.read(&mut byte).expect("read") == 1 {
            reply.push(byte[0]);
            if reply.ends_with(b"\r\n") {
                lines += 1;
                let bulk_with_value = reply.starts_with(b"$") && !reply.starts_with(b"$-1");
                if !bulk_with_value || lines == 2 {
                    break;
                }
            }
        }
        String::from_utf8(reply).expect("utf-8 reply")
    }

    #[test]
    fn an_aof_server_started_again_after_sigkill_has_its_data() {
        let mut server = RedisServer::start_with(RedisOptions {
            aof: true,
            ..RedisOptions::default()
        })
        .expect("start");
        let port = server.port();
        assert_eq!(command(port, &["SET", "kept", "yes"]), "+OK\r\n");

        server.stop();
        assert!(!ping(port));
        server.start_again().expect("start again");

        assert_eq!(server.port(), port);
        assert_eq!(command(port, &["GET", "kept"]), "$3\r\nyes\r\n");

        // restart() still means empty, AOF or not.
        server.restart().expect("restart");
        assert_eq!(command(port, &["GET", "kept"]), "$-1\r\n");
    }

    #[test]
    fn a_server_without_aof_forgets_everything_when_started_again() {
        let mut server = RedisServer::start().expect("start");
        let port = server.port();
        assert_eq!(command(port, &["SET", "lost", "yes"]), "+OK\r\n");
        server.stop();
        server.start_again().expect("start again");
        assert_eq!(command(port, &["GET", "lost"]), "$-1\r\n");
    }

    #[test]
    fn a_paused_server_answers_again_once_resumed() {
        let server = RedisServer::start().expect("start");
        server.pause().expect("pause");
        assert!(!ping(server.port()), "a paused server does not answer");
        server.resume().expect("resume");
        assert!(ping(server.port()));
    }

    /// A TCP server that greets each connection with `name\n`, then echoes.
    /// Aborting the task closes its port and every connection.
    async fn echo_server(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind echo server");
        let addr = listener.local_addr().expect("echo addr");
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.spawn(async move {
                    let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
                    let mut buffer = [0u8; 64];
                    while let Ok(count @ 1..) = stream.read(&mut buffer).await {
                        if stream.write_all(&buffer[..count]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Connects through the balancer: the backend's name, after checking
    /// that bytes go both ways. `None` when the balancer drops the
    /// connection.
    async fn via(balancer: &TcpBalancer) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(balancer.addr())
            .await
            .expect("the balancer accepts");
        let mut stream = tokio::io::BufReader::new(stream);
        let mut name = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut name))
            .await
            .expect("a greeting or a close in time");
        if read.unwrap_or(0) == 0 {
            return None;
        }
        stream.get_mut().write_all(b"ping").await.expect("write");
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"ping");
        Some(name.trim_end().to_owned())
    }

    #[tokio::test]
    async fn the_balancer_spreads_connections_and_skips_a_dead_backend() {
        let (first, first_task) = echo_server("first").await;
        let (second, _second_task) = echo_server("second").await;
        let balancer = TcpBalancer::start(vec![first, second]).expect("balancer");
        assert_eq!(balancer.url(), format!("http://{}", balancer.addr()));

        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(via(&balancer).await.expect("a backend"));
        }
        names.sort();
        assert_eq!(names, ["first", "first", "second", "second"]);

        // The first backend dies: its port refuses connections.
        first_task.abort();
        let _ = first_task.await;
        for _ in 0..4 {
            assert_eq!(via(&balancer).await.as_deref(), Some("second"));
        }

        // A backend that comes back elsewhere is added.
        let (third, _third_task) = echo_server("third").await;
        balancer.set_backends(vec![first, third]);
        assert_eq!(balancer.backends(), vec![first, third]);
        for _ in 0..2 {
            assert_eq!(via(&balancer).await.as_deref(), Some("third"));
        }

        // No backend accepts: the client's connection is dropped.
        balancer.set_backends(vec![first]);
        assert_eq!(via(&balancer).await, None);

        let addr = balancer.addr();
        drop(balancer);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// PINGs through the redis crate with the given pieces; the error text
    /// on failure.
    fn client_ping(
        server: &RedisServer,
        url: &str,
        with_ca: bool,
        with_client_cert: bool,
    ) -> Result<(), String> {
        let run = || -> anyhow::Result<()> {
            install_crypto_provider();
            let client_tls = if with_client_cert {
                Some(redis::ClientTlsConfig {
                    client_cert: std::fs::read(server.client_cert_path().expect("tls"))?,
                    client_key: std::fs::read(server.client_key_path().expect("tls"))?,
                })
            } else {
                None
            };
            let root_cert = if with_ca {
                Some(std::fs::read(server.ca_cert_path().expect("tls"))?)
            } else {
                None
            };
            let client = redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )?;
            let mut connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
            let _: String = redis::cmd("PING").query(&mut connection)?;
            Ok(())
        };
        run().map_err(|error| format!("{error:#}"))
    }

    #[test]
    fn a_tls_server_with_a_password_answers_only_over_tls_with_the_password() {
        let mut server =
            RedisServer::start_with(RedisOptions::tls_with_password("s3cret")).expect("start");
        let port = server.port();
        assert_eq!(server.url(), format!("rediss://:s3cret@127.0.0.1:{port}"));
        assert_eq!(
            server.url_without_password(),
            format!("rediss://127.0.0.1:{port}")
        );
        assert_eq!(server.password(), Some("s3cret"));
        for path in [
            server.ca_cert_path(),
            server.client_cert_path(),
            server.client_key_path(),
        ] {
            assert!(path.expect("a TLS server has certificates").is_file());
        }
        // Plaintext gets no +PONG from a TLS port.
        assert!(!ping(port));
        client_ping(&server, &server.url(), true, false).expect("TLS + password");
        // A client certificate is not required, but may be presented.
        client_ping(&server, &server.url(), true, true).expect("with a client certificate");
        assert!(client_ping(&server, &server.url_without_password(), true, false).is_err());
        assert!(client_ping(&server, &server.url(), false, false).is_err());

        // Restarted and started again with the same certificates.
        server.restart().expect("restart");
        client_ping(&server, &server.url(), true, false).expect("after restart");
        server.start_again().expect("start again");
        client_ping(&server, &server.url(), true, false).expect("after start again");
    }

    #[test]
    fn a_server_that_requires_client_certificates_refuses_clients_without_one() {
        let server = RedisServer::start_with(RedisOptions {
            tls: true,
            require_client_cert: true,
            ..RedisOptions::default()
        })
        .expect("start");
        assert_eq!(
            server.url(),
            format!("rediss://127.0.0.1:{}", server.port())
        );
        client_ping(&server, &server.url(), true, true).expect("with a client certificate");
        assert!(client_ping(&server, &server.url(), true, false).is_err());
    }

    #[test]
    fn a_password_server_without_tls_wants_the_password() {
        let server = RedisServer::start_with(RedisOptions {
            password: Some("pw42".to_owned()),
            ..RedisOptions::default()
        })
        .expect("start");
        assert_eq!(
            server.url(),
            format!("redis://:pw42@127.0.0.1:{}", server.port())
        );
        assert!(server.certificates().is_none());
        assert_eq!(
            command(server.port(), &["GET", "x"]).get(..7),
            Some("-NOAUTH")
        );
    }

    #[test]
    fn drop_kills_the_server() {
        let server = RedisServer::start().expect("start");
        let port = server.port();
        drop(server);
        assert!(!ping(port));
    }
}
