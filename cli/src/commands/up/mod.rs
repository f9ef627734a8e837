//! `volley up`: a local cluster for trying Volley in one command — a
//! `redis-server`, a coordinator and N workers as child processes of this
//! binary, in the foreground until Ctrl-C, then stopped in order.
//!
//! # Layout
//! - `part` — one child process: own process group, output relayed with a
//!   `[role]` prefix, SIGTERM/SIGKILL.
//! - `redis` — finding and starting `redis-server`, waiting for `PING`.

mod part;
mod redis;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tokio::process::Command;
use tokio_util::task::TaskTracker;
use volley_client::{Client, Connection, HealthProbe};

use self::part::{Part, PartKind, describe};
use crate::exit::Exit;
use crate::telemetry;

/// Printed under `volley up --help`.
pub const UP_HELP: &str = "\
Once the coordinator is SERVING and every worker is registered, prints
`volley up: ready at http://HOST:PORT` on stdout (the only line on stdout;
scripts wait for it), and how to use the cluster on stderr. Each part's
output goes to stderr, prefixed with its role: [redis], [coordinator],
[worker-1], ... (VOLLEY_LOG=warn quiets them).

Ctrl-C, SIGTERM or SIGHUP stops everything in order: workers drain their
running ops (--drain-timeout), then the coordinator stops, then Redis; the
temp dir is removed. A second Ctrl-C kills what is left at once. If any part
dies on its own, volley up says which, stops the rest and exits 3.

If volley up itself is killed with SIGKILL, the coordinator and workers
notice (their stdin closes) and stop by themselves; a redis-server it started
is left running (its pid and port are printed at start).

Exit codes:
  0  stopped on request (Ctrl-C, SIGTERM, SIGHUP)
  2  could not start: invalid flags, the port is in use, redis-server is not
     on the PATH
  3  the cluster did not come up within --ready-timeout, or a part died

Examples:
  volley up --allow-shell                  # then: volley submit examples/chain.yaml --watch
  volley up --listen 127.0.0.1:0 --workers 4 --slots 8
  volley up --redis redis://127.0.0.1:6379 # use a running Redis";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Workers to start.
    #[arg(long, env = "VOLLEY_WORKERS", default_value_t = 2)]
    pub workers: u32,
    /// Slots of each worker: ops it runs at once (default: one per CPU).
    #[arg(long, env = "VOLLEY_SLOTS")]
    pub slots: Option<u32>,
    /// The coordinator's address. Port 0 picks a free port (the ready line
    /// names it).
    #[arg(long, env = "VOLLEY_LISTEN", default_value = volley_proto::DEFAULT_COORDINATOR_ADDR)]
    pub listen: SocketAddr,
    /// The web dashboard's address (`volley coordinator
    /// --dashboard-listen`). Port 0, the default, picks a free port; the
    /// start-up lines give a link that logs in.
    #[arg(
        long,
        env = "VOLLEY_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:0",
        value_name = "ADDR"
    )]
    pub dashboard_listen: SocketAddr,
    /// Use this Redis instead of starting a redis-server.
    #[arg(long, env = "VOLLEY_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Keep the started Redis's data in DIR (append-only file), so batches
    /// and memory outlive a restart; without it nothing is saved and the
    /// data lives in a temp dir removed on exit.
    #[arg(
        long,
        env = "VOLLEY_UP_PERSIST",
        value_name = "DIR",
        conflicts_with = "redis"
    )]
    pub persist: Option<PathBuf>,
    /// The redis-server program to start (a name looked up on the PATH, or
    /// a path).
    #[arg(
        long,
        env = "VOLLEY_REDIS_SERVER",
        value_name = "PROGRAM",
        default_value = "redis-server"
    )]
    pub redis_server: PathBuf,
    /// Workers' file kinds work under this directory (default: the current
    /// directory).
    #[arg(long, env = "VOLLEY_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Let workers run `shell` and `agent` ops (host programs).
    #[arg(long, env = "VOLLEY_ALLOW_SHELL", default_value_t = false)]
    pub allow_shell: bool,
    /// How long the coordinator and workers may take to come up.
    #[arg(long, env = "VOLLEY_UP_READY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// On stop, how long workers may take to finish their running ops.
    /// Each part gets this plus 10s to exit before it is killed.
    #[arg(long, env = "VOLLEY_DRAIN_TIMEOUT", default_value = super::duration_text(volley_worker::WorkerConfig::DEFAULT_DRAIN_TIMEOUT), value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

/// Why the cluster could not start, and which exit code that is.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "`{program}` is not on the PATH: install Redis (e.g. `apt install redis-server`, \
         `brew install redis`) or pass --redis URL of a running one"
    )]
    RedisServerMissing { program: String },
    #[error(
        "port {port} is in use (--listen {address}): stop what holds it, pass another \
         --listen, or --listen {ip}:0 for any free port",
        ip = address.ip()
    )]
    PortInUse { address: SocketAddr, port: u16 },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the {role} ({program}): {source}")]
    Spawn {
        role: String,
        program: String,
        source: std::io::Error,
    },
    #[error("redis-server did not start: {0}")]
    RedisDidNotStart(String),
    #[error(
        "the {role} (pid {pid}) exited before the cluster was ready ({status}); see its [{role}] lines above"
    )]
    DiedEarly {
        role: String,
        pid: u32,
        status: String,
    },
    #[error("the cluster was not ready within {}: {waiting_for}", humantime::format_duration(*timeout))]
    NotReady {
        timeout: Duration,
        waiting_for: String,
    },
    #[error("{0} before the cluster was ready")]
    Interrupted(&'static str),
}

impl UpError {
    fn exit(&self) -> Exit {
        match self {
            UpError::InvalidArgument(_)
            | UpError::RedisServerMissing { .. }
            | UpError::PortInUse { .. }
            | UpError::Listen { .. }
            | UpError::Directory { .. }
            | UpError::Spawn { .. } => Exit::Invalid,
            UpError::RedisDidNotStart(_) | UpError::DiedEarly { .. } | UpError::NotReady { .. } => {
                Exit::Unreachable
            }
            UpError::Interrupted(_) => Exit::Success,
        }
    }
}

/// Everything checked before anything starts.
struct Plan {
    exe: PathBuf,
    root: PathBuf,
    redis: RedisSource,
}

enum RedisSource {
    /// Start this redis-server.
    Start(PathBuf),
    /// Use the Redis at this URL (`--redis`).
    External(String),
}

impl Plan {
    fn check(args: &UpArgs) -> Result<Plan, UpError> {
        if args.workers == 0 {
            return Err(UpError::InvalidArgument(
                "--workers must be at least 1".to_owned(),
            ));
        }
        if args.slots == Some(0) {
            return Err(UpError::InvalidArgument(
                "--slots must be at least 1".to_owned(),
            ));
        }
        let exe = std::env::current_exe().map_err(|source| {
            UpError::InvalidArgument(format!("cannot find this program's path: {source}"))
        })?;
        let root = match &args.root {
            Some(root) => std::fs::canonicalize(root).map_err(|source| {
                UpError::InvalidArgument(format!("--root {}: {source}", root.display()))
            })?,
            None => std::env::current_dir()
                .and_then(std::fs::canonicalize)
                .map_err(|source| {
                    UpError::InvalidArgument(format!(
                        "cannot resolve the current directory: {source}"
                    ))
                })?,
        };
        if args.listen.port() != 0 {
            check_port_free(args.listen)?;
        }
        let redis =
            match &args.redis {
                Some(url) => RedisSource::External(url.clone()),
                None => RedisSource::Start(redis::find_program(&args.redis_server).ok_or_else(
                    || UpError::RedisServerMissing {
                        program: args.redis_server.display().to_string(),
                    },
                )?),
            };
        Ok(Plan { exe, root, redis })
    }
}

fn check_port_free(address: SocketAddr) -> Result<(), UpError> {
    match std::net::TcpListener::bind(address) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(UpError::PortInUse {
            address,
            port: address.port(),
        }),
        Err(source) => Err(UpError::Listen { address, source }),
    }
}

/// A port nothing listens on now (the kernel's pick for port 0).
fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The address clients dial for a listen address: a wildcard bind is
/// reached on loopback.
fn dial_address(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
    } else {
        listen
    }
}

/// The running parts, and what to clean up.
struct Cluster {
    parts: Vec<Part>,
    /// Redis's data when nothing is persisted; removed at the end.
    temp_dir: Option<PathBuf>,
    relays: TaskTracker,
}

/// What the banner tells the user.
struct Ready {
    url: String,
    dial: SocketAddr,
    redis_url: String,
    /// The admin token every part and the user's commands use, and the
    /// 0600 file holding it.
    token: String,
    token_file: PathBuf,
    /// The dashboard's base URL.
    dashboard: String,
}

pub async fn run(args: UpArgs) -> Exit {
    telemetry::init("warn");
    // Before anything starts: a Ctrl-C during start-up stops what started.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return Exit::Invalid;
        }
    };
    let plan = match Plan::check(&args) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return error.exit();
        }
    };
    let mut cluster = Cluster {
        parts: Vec::new(),
        temp_dir: None,
        relays: TaskTracker::new(),
    };
    let started = cluster.start(&args, &plan, &mut signals).await;
    let exit = match started {
        Err(error) => {
            eprintln!("error: {error}");
            error.exit()
        }
        Ok(ready) => {
            print_ready(&args, &plan, &cluster, &ready);
            tokio::select! {
                signal = signals.next() => {
                    eprintln!("[up] {signal}: stopping (workers drain first; Ctrl-C again to kill at once)");
                    Exit::Success
                }
                index = first_exit(&mut cluster.parts) => {
                    let part = &mut cluster.parts[index];
                    let status = part.wait().await;
                    eprintln!(
                        "[up] error: the {} (pid {}) exited unexpectedly ({}); stopping the rest",
                        part.role,
                        part.pid(),
                        describe(status)
                    );
                    Exit::Unreachable
                }
            }
        }
    };
    cluster
        .stop(&mut signals, args.drain_timeout + Duration::from_secs(10))
        .await;
    cluster.clean_up().await;
    exit
}

impl Cluster {
    /// Starts Redis (unless `--redis`), the coordinator and the workers,
    /// and waits until they are ready.
    async fn start(
        &mut self,
        args: &UpArgs,
        plan: &Plan,
        signals: &mut Signals,
    ) -> Result<Ready, UpError> {
        let redis_url = match &plan.redis {
            RedisSource::Start(binary) => {
                let persistence = match &args.persist {
                    Some(directory) => {
                        std::fs::create_dir_all(directory).map_err(|source| {
                            UpError::Directory {
                                path: directory.clone(),
                                source,
                            }
                        })?;
                        redis::Persistence::AppendOnly(directory.clone())
                    }
                    None => {
                        let directory = make_temp_dir()?;
                        self.temp_dir = Some(directory.clone());
                        redis::Persistence::None(directory)
                    }
                };
                let started = tokio::select! {
                    started = redis::start(binary, &persistence, &self.relays) => started?,
                    signal = signals.next() => return Err(UpError::Interrupted(signal)),
                };
                let (part, port) = started;
                self.parts.push(part);
                format!("redis://127.0.0.1:{port}")
            }
            RedisSource::External(url) => url.clone(),
        };
        // Port 0 is resolved only now, with Redis already on its port, so
        // the two cannot pick the same one.
        let listen = if args.listen.port() == 0 {
            let port = free_port(args.listen.ip()).map_err(|source| UpError::Listen {
                address: args.listen,
                source,
            })?;
            SocketAddr::new(args.listen.ip(), port)
        } else {
            args.listen
        };
        let dial = dial_address(listen);
        let url = format!("http://{dial}");
        let dashboard_listen = if args.dashboard_listen.port() == 0 {
            let port = free_port(args.dashboard_listen.ip()).map_err(|source| UpError::Listen {
                address: args.dashboard_listen,
                source,
            })?;
            SocketAddr::new(args.dashboard_listen.ip(), port)
        } else {
            args.dashboard_listen
        };
        let dashboard = format!("http://{}", dial_address(dashboard_listen));
        // An admin token of this cluster's own, in a file only this user
        // reads: the coordinator checks every call against it.
        let token_dir = match &self.temp_dir {
            Some(directory) => directory.clone(),
            None => {
                let directory = make_temp_dir()?;
                self.temp_dir = Some(directory.clone());
                directory
            }
        };
        let token = super::random_token();
        let token_file = token_dir.join("admin.token");
        write_private(&token_file, &token)?;

        let mut coordinator = Command::new(&plan.exe);
        coordinator
            .arg("coordinator")
            .arg("--listen")
            .arg(listen.to_string())
            // By environment, not argument: a password in the URL would
            // show in `ps` to every user of the machine.
            .env("VOLLEY_REDIS", &redis_url)
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--dashboard-listen")
            .arg(dashboard_listen.to_string())
            .arg("--stop-on-stdin-eof");
        self.spawn_volley(
            PartKind::Coordinator,
            "coordinator".to_owned(),
            coordinator,
            plan,
        )?;
        let deadline = tokio::time::Instant::now() + args.ready_timeout;
        // Workers start once the coordinator serves: no retry noise from
        // workers dialling a port nobody listens on yet.
        let coordinator_serving = async {
            loop {
                if let Ok(probe) = HealthProbe::connect(&url, Duration::from_secs(1)).await
                    && probe
                        .check("")
                        .await
                        .is_ok_and(|status| status.is_serving())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        self.wait_for(
            coordinator_serving,
            deadline,
            args.ready_timeout,
            signals,
            || format!("the coordinator at {url} is not SERVING"),
        )
        .await?;

        for number in 1..=args.workers {
            let role = format!("worker-{number}");
            let mut worker = Command::new(&plan.exe);
            worker
                .arg("worker")
                .arg("--coordinator")
                .arg(&url)
                .arg("--root")
                .arg(&plan.root)
                .arg("--drain-timeout")
                .arg(humantime::format_duration(args.drain_timeout).to_string())
                .arg("--token-file")
                .arg(&token_file)
                // A token of another cluster in the user's shell would win
                // over --token-file.
                .env_remove("VOLLEY_TOKEN")
                .arg("--stop-on-stdin-eof");
            // Short ids on a Redis of our own; on a shared one, the default
            // (hostname-pid-random) cannot clash with another cluster's.
            if matches!(plan.redis, RedisSource::Start(_)) {
                worker.arg("--id").arg(&role);
            }
            if let Some(slots) = args.slots {
                worker.arg("--slots").arg(slots.to_string());
            }
            if args.allow_shell {
                worker.arg("--allow-shell");
            }
            self.spawn_volley(PartKind::Worker, role, worker, plan)?;
        }
        let registered = std::cell::Cell::new(0_usize);
        let wanted = args.workers as usize;
        let workers_registered = async {
            loop {
                let connection = Connection::new(url.clone()).with_token(token.clone());
                if let Ok(client) = Client::connect_with(&connection).await
                    && let Ok(workers) = client.workers().await
                {
                    registered.set(workers.len());
                    if workers.len() >= wanted {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        self.wait_for(
            workers_registered,
            deadline,
            args.ready_timeout,
            signals,
            || format!("{} of {wanted} workers registered", registered.get()),
        )
        .await?;
        Ok(Ready {
            url,
            dial,
            redis_url,
            token,
            token_file,
            dashboard,
        })
    }

    /// Waits for `condition` until `deadline`, unless a part exits or a
    /// signal comes first; `waiting_for` says what was missing at the
    /// deadline.
    async fn wait_for(
        &mut self,
        condition: impl std::future::Future<Output = ()>,
        deadline: tokio::time::Instant,
        timeout: Duration,
        signals: &mut Signals,
        waiting_for: impl FnOnce() -> String,
    ) -> Result<(), UpError> {
        tokio::select! {
            () = condition => Ok(()),
            () = tokio::time::sleep_until(deadline) => Err(UpError::NotReady {
                timeout,
                waiting_for: waiting_for(),
            }),
            index = first_exit(&mut self.parts) => {
                let part = &mut self.parts[index];
                let status = part.wait().await;
                Err(UpError::DiedEarly {
                    role: part.role.clone(),
                    pid: part.pid(),
                    status: describe(status),
                })
            }
            signal = signals.next() => Err(UpError::Interrupted(signal)),
        }
    }

    /// Starts this binary as a part: its stdin held (see [`Part`]), and
    /// without the environment that would make every worker clash (one
    /// health port, one id).
    fn spawn_volley(
        &mut self,
        kind: PartKind,
        role: String,
        mut command: Command,
        plan: &Plan,
    ) -> Result<(), UpError> {
        command
            .env_remove("VOLLEY_HEALTH_LISTEN")
            .env_remove("VOLLEY_WORKER_ID")
            .env_remove("VOLLEY_COORDINATOR_ID");
        // Their logs reach a terminal only through us: colours only if ours
        // is one.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            command.env("NO_COLOR", "1");
        }
        let part =
            Part::spawn(kind, role.clone(), command, true, &self.relays).map_err(|source| {
                UpError::Spawn {
                    role,
                    program: plan.exe.display().to_string(),
                    source,
                }
            })?;
        self.parts.push(part);
        Ok(())
    }

    /// Stops every running part in order — workers (they drain), the
    /// coordinator, Redis — each with SIGTERM, killed if it takes longer
    /// than `grace` or on a second signal.
    async fn stop(&mut self, signals: &mut Signals, grace: Duration) {
        let mut hurry = false;
        for (kind, what) in [
            (PartKind::Worker, "workers (they finish their running ops)"),
            (PartKind::Coordinator, "the coordinator"),
            (PartKind::Redis, "redis"),
        ] {
            if !self
                .parts
                .iter()
                .any(|part| part.kind == kind && part.is_running())
            {
                continue;
            }
            eprintln!("[up] stopping {what}");
            for part in self.parts.iter_mut().filter(|part| part.kind == kind) {
                if hurry {
                    part.kill();
                } else {
                    part.terminate();
                }
            }
            let stopped = futures::future::join_all(
                self.parts
                    .iter_mut()
                    .filter(|part| part.kind == kind)
                    .map(Part::wait),
            );
            let forced = tokio::select! {
                _ = stopped => None,
                () = tokio::time::sleep(grace) => Some(format!("still running after {}", humantime::format_duration(grace))),
                signal = signals.next() => {
                    hurry = true;
                    Some(format!("{signal} again"))
                }
            };
            for part in self.parts.iter_mut().filter(|part| part.kind == kind) {
                if let Some(reason) = &forced
                    && part.is_running()
                {
                    eprintln!(
                        "[up] {} (pid {}): {reason}: killing it",
                        part.role,
                        part.pid()
                    );
                    part.kill();
                }
                let status = part.wait().await;
                // Killed on purpose (a timeout, a second signal) was said above.
                if !status.success() && forced.is_none() && !hurry {
                    eprintln!("[up] {} exited ({})", part.role, describe(status));
                }
            }
        }
    }

    /// Removes the temp dir and lets the relays print the parts' last lines.
    async fn clean_up(&mut self) {
        self.relays.close();
        // The pipes close as the parts exit; a grandchild that inherited
        // one could hold it open, so do not wait for ever.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.relays.wait()).await;
        if let Some(directory) = self.temp_dir.take() {
            match std::fs::remove_dir_all(&directory) {
                Ok(()) => eprintln!("[up] stopped; removed {}", directory.display()),
                Err(error) => eprintln!(
                    "[up] stopped; could not remove {}: {error}",
                    directory.display()
                ),
            }
        } else {
            eprintln!("[up] stopped");
        }
    }
}

/// The index of the first part to exit (pending for ever when none runs).
async fn first_exit(parts: &mut [Part]) -> usize {
    let waits: Vec<_> = parts
        .iter_mut()
        .enumerate()
        .filter(|(_, part)| part.is_running())
        .map(|(index, part)| {
            Box::pin(async move {
                part.wait().await;
                index
            })
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// Writes `text` to a new file only its owner may read (0600).
fn write_private(path: &Path, text: &str) -> Result<(), UpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()));
    written.map_err(|source| UpError::Directory {
        path: path.to_owned(),
        source,
    })
}

/// A fresh directory for Redis's data and the admin token, 0700:
/// `$TMPDIR/volley-up-<pid>[-n]`.
fn make_temp_dir() -> Result<PathBuf, UpError> {
    super::private_temp_dir("volley-up").map_err(|source| UpError::Directory {
        path: std::env::temp_dir().join(format!("volley-up-{}", std::process::id())),
        source,
    })
}

fn print_ready(args: &UpArgs, plan: &Plan, cluster: &Cluster, ready: &Ready) {
    let pids_of = |kind: PartKind| {
        cluster
            .parts
            .iter()
            .filter(|part| part.kind == kind)
            .map(|part| part.pid().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (&plan.redis, &cluster.temp_dir, &args.persist) {
        (RedisSource::Start(_), Some(directory), _) => eprintln!(
            "[up] redis        {} (pid {}; data in {}, not saved)",
            volley_store::redact_url(&ready.redis_url),
            pids_of(PartKind::Redis),
            directory.display()
        ),
        (RedisSource::Start(_), None, Some(directory)) => eprintln!(
            "[up] redis        {} (pid {}; data kept in {})",
            volley_store::redact_url(&ready.redis_url),
            pids_of(PartKind::Redis),
            directory.display()
        ),
        _ => eprintln!(
            "[up] redis        {} (not started by volley up)",
            volley_store::redact_url(&ready.redis_url)
        ),
    }
    eprintln!(
        "[up] coordinator  {} (pid {})",
        ready.url,
        pids_of(PartKind::Coordinator)
    );
    eprintln!(
        "[up] workers      {} (pids {}; file kinds under {}; shell ops {})",
        args.workers,
        pids_of(PartKind::Worker),
        plan.root.display(),
        if args.allow_shell {
            "allowed"
        } else {
            "refused: --allow-shell"
        }
    );
    let shell_note = if args.allow_shell {
        ""
    } else {
        "    # chain.yaml runs a shell op: start volley up --allow-shell (or try examples/fan-out.yaml)\n"
    };
    eprintln!(
        "[up] admin token  {} (mode 0600; `volley token create` makes narrower ones)",
        ready.token_file.display()
    );
    eprintln!(
        "[up] dashboard    {}/ (this link logs in: {}/login?token={}&next=/)",
        ready.dashboard, ready.dashboard, ready.token
    );
    eprintln!(
        "\nVolley is up. In another terminal:\n\n    \
         export VOLLEY_COORDINATOR={url}\n    \
         export VOLLEY_TOKEN={token}\n    \
         volley submit examples/chain.yaml --watch\n{shell_note}    \
         volley workers\n    \
         volley health\n\n\
         From Python (it reads VOLLEY_TOKEN too):\n\n    \
         import volley\n    \
         client = volley.Client(\"{dial}\")\n\n\
         Ctrl-C stops everything: workers drain, then the coordinator and Redis stop.\n",
        url = ready.url,
        dial = ready.dial,
        token = ready.token,
    );
    println!("volley up: ready at {}", ready.url);
}

/// SIGINT, SIGTERM and SIGHUP (the terminal closed), listened for from the
/// start so none of them kills `volley up` before it stopped its parts.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// The next signal's name. Cancel-safe.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "SIGINT",
            Some(()) = self.terminate.recv() => "SIGTERM",
            Some(()) = self.hangup.recv() => "SIGHUP",
            else => std::future::pending().await,
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_dialled_on_loopback() {
        let listen: SocketAddr = "0.0.0.0:7070".parse().expect("address");
        assert_eq!(dial_address(listen).to_string(), "127.0.0.1:7070");
        let listen: SocketAddr = "127.0.0.1:7071".parse().expect("address");
        assert_eq!(dial_address(listen), listen);
    }

    #[test]
    fn a_port_in_use_is_named() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = holder.local_addr().expect("address");
        let error = check_port_free(address).expect_err("the port is taken");
        assert!(
            error
                .to_string()
                .contains(&format!("port {} is in use", address.port())),
            "{error}"
        );
        assert_eq!(error.exit(), Exit::Invalid);
    }

    #[test]
    fn temp_dirs_do_not_collide() {
        let first = make_temp_dir().expect("first");
        let second = make_temp_dir().expect("second");
        assert_ne!(first, second);
        std::fs::remove_dir_all(first).expect("remove");
        std::fs::remove_dir_all(second).expect("remove");
    }
}
