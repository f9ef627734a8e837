//! Test harness for Volley: a real `redis-server` (from `PATH`) on a free
//! port, with its own temp dir, killed on drop — so every test gets a private
//! database and never touches a shared Redis (no `FLUSHDB`).
//!
//! Everything here is blocking (`std::process`, `std::net`), so it works from
//! sync tests and from async tests alike: starting a server takes a few
//! milliseconds of polling, which is fine to block a test runtime on.
//!
//! # Layout
//! - [`RedisServer`]: start, `url()`, `kill()`, `restart()`, kill on `Drop`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A `redis-server` child process on `127.0.0.1:<port>`, no persistence.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> anyhow::Result<RedisServer> {
        let serial = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("volley-redis-{}-{}", std::process::id(), serial));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(port, &dir) {
                Ok(child) => {
                    return Ok(RedisServer {
                        child: Some(child),
                        port,
                        dir,
                    });
                }
                // Most likely a port clash: pick another port.
                Err(error) => last_error = Some(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (to SIGSTOP it, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no clean shutdown, no save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts a fresh one on the same port
    /// (empty: nothing is persisted), waiting until it answers `PING`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let child = spawn_ready(self.port, &self.dir)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port the OS considered free a moment ago (bind port 0, read, drop).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// Spawns redis-server on `port` and polls `PING` until it answers, the
/// process exits (e.g. port taken) or the deadline passes.
fn spawn_ready(port: u16, dir: &Path) -> anyhow::Result<Child> {
    let log_file = dir.join(format!("redis-{port}.log"));
    let mut child = Command::new("redis-server")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log_file)
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
        if ping(port) {
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

    #[test]
    fn drop_kills_the_server() {
        let server = RedisServer::start().expect("start");
        let port = server.port();
        drop(server);
        assert!(!ping(port));
    }
}
