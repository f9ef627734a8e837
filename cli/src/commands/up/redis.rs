//! The `redis-server` `volley up` starts: found on the PATH, on a free
//! loopback port, ready once it answers `PING`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::task::TaskTracker;

use super::UpError;
use super::part::{Part, PartKind, describe};

/// How long a started redis-server may take to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Free ports tried: another process may take the port between our probe
/// and redis-server's bind.
const PORT_ATTEMPTS: u32 = 3;
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// `program` itself when it names a path, else the first executable
/// `program` in a `PATH` directory.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        metadata.is_file()
    }
}

/// How the started server keeps its data.
pub enum Persistence {
    /// Nothing saved (`--save "" --appendonly no`), in this temp dir.
    None(PathBuf),
    /// An append-only file in this directory, kept across runs.
    AppendOnly(PathBuf),
}

/// Starts `binary` on a free loopback port and waits until it answers
/// `PING`; returns the part and its port.
pub async fn start(
    binary: &Path,
    persistence: &Persistence,
    relays: &TaskTracker,
) -> Result<(Part, u16), UpError> {
    let mut last_failure = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = super::free_port(std::net::Ipv4Addr::LOCALHOST.into())
            .map_err(|source| UpError::RedisDidNotStart(format!("no free port: {source}")))?;
        let mut command = Command::new(binary);
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            "--save",
            "",
        ]);
        match persistence {
            Persistence::None(directory) => {
                command.arg("--dir").arg(directory);
                command.args(["--appendonly", "no"]);
            }
            Persistence::AppendOnly(directory) => {
                command.arg("--dir").arg(directory);
                command.args(["--appendonly", "yes"]);
            }
        }
        let mut part = Part::spawn(PartKind::Redis, "redis".to_owned(), command, false, relays)
            .map_err(|source| UpError::Spawn {
                role: "redis".to_owned(),
                program: binary.display().to_string(),
                source,
            })?;
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        let answered = async {
            while !answers_ping(port).await {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        };
        tokio::select! {
            () = answered => return Ok((part, port)),
            status = part.wait() => {
                // Most likely a port clash: try another port.
                last_failure = format!("it exited ({}) on port {port}", describe(status));
            }
            () = tokio::time::sleep_until(deadline) => {
                part.kill();
                part.wait().await;
                return Err(UpError::RedisDidNotStart(format!(
                    "no answer to PING on port {port} within {}",
                    humantime::format_duration(READY_DEADLINE)
                )));
            }
        }
    }
    Err(UpError::RedisDidNotStart(last_failure))
}

/// True when a Redis on `port` answers `PING` with `+PONG` (or asks for a
/// password, which also means it is up).
async fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0_u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut reply)).await {
        Ok(Ok(read)) if read > 0 => {
            reply[..read].starts_with(b"+PONG") || reply[..read].starts_with(b"-NOAUTH")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_not_on_the_path_is_not_found() {
        assert_eq!(
            find_program(Path::new("volley-no-such-program-anywhere")),
            None
        );
        assert_eq!(find_program(Path::new("/no/such/dir/redis-server")), None);
    }

    #[test]
    fn a_program_on_the_path_is_found() {
        // `sh` is on every unix PATH.
        #[cfg(unix)]
        assert!(find_program(Path::new("sh")).is_some());
    }
}
