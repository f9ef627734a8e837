//! A Volley cluster of real processes — its own redis-server, one coordinator, N workers — killed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use volley_client::{Client, Connection};
use volley_testkit::RedisServer;

use crate::procs::Processes;

/// How long a coordinator may take to accept connections, and workers to
/// register, before the start counts as failed.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Free-port races: a coordinator that fails to bind is tried on another port.
const PORT_ATTEMPTS: u32 = 3;

static NEXT_LOG_DIR: AtomicU64 = AtomicU64::new(0);

/// What a cluster is made of.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub volley_bin: PathBuf,
    pub workers: usize,
    pub slots: u32,
    /// Extra `volley coordinator` flags (a retention flag, for W6).
    pub coordinator_args: Vec<String>,
}

/// A running cluster. Every child is spawned with `kill_on_drop`, and the
/// redis-server is killed by its own `Drop`, so an error or an interrupted
/// run leaves nothing behind; [`Cluster::shutdown`] also reaps them, so
/// their CPU time never lands in a later embedded run's `cutime`.
pub struct Cluster {
    redis: RedisServer,
    coordinator: Member,
    workers: Vec<Member>,
    client: Client,
    redis_connection: redis::aio::MultiplexedConnection,
    logs: LogDir,
}

/// One `volley` child process, its name and where its stderr goes.
struct Member {
    name: String,
    pid: u32,
    child: Child,
    log: PathBuf,
}

impl Cluster {
    pub async fn start(options: &ClusterOptions) -> anyhow::Result<Cluster> {
        let logs = LogDir::create()?;
        let redis = RedisServer::start().context("starting redis-server")?;
        let redis_url = redis.url();
        let redis_connection = redis::Client::open(redis_url.as_str())
            .context("parsing the redis URL")?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to the bench's redis-server")?;
        let (coordinator, coordinator_url, client) =
            start_coordinator(options, &redis_url, &logs).await?;
        let mut cluster = Cluster {
            redis,
            coordinator,
            workers: Vec::new(),
            client,
            redis_connection,
            logs,
        };
        for number in 1..=options.workers {
            let name = format!("w{number}");
            let log = cluster.logs.path.join(format!("worker-{name}.log"));
            let mut command = volley_command(&options.volley_bin, &log)?;
            command
                .arg("worker")
                .arg("--coordinator")
                .arg(&coordinator_url)
                .arg("--slots")
                .arg(options.slots.to_string())
                .arg("--id")
                .arg(&name);
            let member = Member::spawn(format!("worker {name}"), command, log)?;
            cluster.workers.push(member);
        }
        let connected = cluster
            .client
            .wait_for_workers(options.workers, START_DEADLINE)
            .await
            .context("listing workers")?;
        if connected < options.workers {
            cluster.check_alive()?;
            bail!(
                "only {connected} of {} workers registered within {START_DEADLINE:?}",
                options.workers
            );
        }
        Ok(cluster)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cluster's processes by name, for CPU and RSS accounting.
    pub fn processes(&self) -> Processes {
        let mut named = vec![(self.coordinator.name.clone(), self.coordinator.pid)];
        for worker in &self.workers {
            named.push((worker.name.clone(), worker.pid));
        }
        if let Some(pid) = self.redis.pid() {
            named.push(("redis-server".to_owned(), pid));
        }
        Processes { named }
    }

    /// Fails naming the first member that has exited, with its log's tail.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for member in std::iter::once(&mut self.coordinator).chain(self.workers.iter_mut()) {
            member.check_alive()?;
        }
        if self.redis.pid().is_none() {
            bail!("redis-server is not running");
        }
        Ok(())
    }

    /// Redis `INFO memory` → `used_memory`, in bytes.
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let mut connection = self.redis_connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut connection)
            .await
            .context("INFO memory")?;
        parse_used_memory(&info).context("INFO memory has no used_memory line")
    }

    /// Redis `INFO commandstats`: (commands, script calls). `commands`
    /// counts every command Redis ran, those inside scripts included (Redis
    /// counts a script's `redis.call`s under their own names) and the script
    /// calls themselves excluded; `script calls` counts EVALSHA/EVAL/FCALL.
    pub async fn command_counts(&self) -> anyhow::Result<(u64, u64)> {
        let mut connection = self.redis_connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .context("INFO commandstats")?;
        Ok(parse_command_counts(&info))
    }

    /// Kills every member and waits for each (redis-server too).
    pub async fn shutdown(mut self) {
        for member in std::iter::once(&mut self.coordinator).chain(self.workers.iter_mut()) {
            let _ = member.child.start_kill();
            let _ = member.child.wait().await;
        }
        self.redis.kill();
    }
}

/// Starts `volley coordinator` on a free port and connects a client to it.
async fn start_coordinator(
    options: &ClusterOptions,
    redis_url: &str,
    logs: &LogDir,
) -> anyhow::Result<(Member, String, Client)> {
    let mut last_error = None;
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port()?;
        let log = logs.path.join(format!("coordinator-{attempt}.log"));
        let mut command = volley_command(&options.volley_bin, &log)?;
        command
            .arg("coordinator")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--redis")
            .arg(redis_url)
            .args(&options.coordinator_args);
        let mut member = Member::spawn("coordinator".to_owned(), command, log)?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Err(error) = member.check_alive() {
                // Most likely the port was taken meanwhile: another port.
                last_error = Some(error);
                break;
            }
            let connection = Connection::new(url.clone()).with_token(BENCH_ADMIN_TOKEN);
            if let Ok(client) = Client::connect_with(&connection).await {
                return Ok((member, url, client));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the coordinator did not accept connections on {url} within {START_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the coordinator did not start")))
}

/// The admin token of the bench's clusters: authentication stays on, as
/// in production, so its cost is in every number.
pub const BENCH_ADMIN_TOKEN: &str = "volley-bench-admin-token-0123456789abcdef";

/// `volley` with logs at warn to `log`, stdout discarded, killed on drop;
/// a coordinator reads the bench's admin token from a file next to `log`,
/// workers and clients send it.
pub fn volley_command(volley_bin: &Path, log: &Path) -> anyhow::Result<Command> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let token_file = log.with_file_name("admin.token");
    std::fs::write(&token_file, BENCH_ADMIN_TOKEN)
        .with_context(|| format!("writing {}", token_file.display()))?;
    let mut command = Command::new(volley_bin);
    command
        .env("VOLLEY_ADMIN_TOKEN_FILE", &token_file)
        .env("VOLLEY_TOKEN", BENCH_ADMIN_TOKEN)
        .env("VOLLEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    Ok(command)
}

impl Member {
    fn spawn(name: String, mut command: Command, log: PathBuf) -> anyhow::Result<Member> {
        let child = command
            .spawn()
            .with_context(|| format!("spawning the {name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("the {name} has no pid"))?;
        Ok(Member {
            name,
            pid,
            child,
            log,
        })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the {} exited with {status}; its log ends:\n{}",
                self.name,
                log_tail(&self.log)
            );
        }
        Ok(())
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    lines[start..].join("\n")
}

/// A port the OS considered free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

fn parse_command_counts(info: &str) -> (u64, u64) {
    let (mut commands, mut scripts) = (0, 0);
    for line in info.lines() {
        let Some((name, rest)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|line| line.split_once(':'))
        else {
            continue;
        };
        let calls: u64 = rest
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0);
        match name {
            "evalsha" | "eval" | "evalsha_ro" | "eval_ro" | "fcall" | "fcall_ro" => {
                scripts += calls
            }
            // Our own INFO and CONFIG calls are not Volley's work.
            name if name.starts_with("info") || name.starts_with("config") => {}
            _ => commands += calls,
        }
    }
    (commands, scripts)
}

fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
}

/// A private temp dir for one cluster's logs, removed on drop.
pub struct LogDir {
    pub path: PathBuf,
}

impl LogDir {
    pub fn create() -> anyhow::Result<LogDir> {
        let serial = NEXT_LOG_DIR.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("volley-bench-{}-{serial}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(LogDir { path })
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info), Some(1_048_576));
        assert_eq!(parse_used_memory("# Memory\r\n"), None);
    }
}
