//! `volley run FILE`: the whole cluster in one process — a coordinator on
//! the in-memory store, listening on a loopback port (so programs the batch
//! runs can reach it like a real one), and N workers with host kinds on,
//! confined to the current directory. Same code paths as a cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use volley_builtins::op_processes::{self, GroupSignal, TERMINATE_GRACE};
use volley_builtins::{BuiltinConfig, BuiltinRegistry};
use volley_client::{Client, Connection};
use volley_coordinator::auth::AuthConfig;
use volley_coordinator::{Coordinator, CoordinatorConfig};
use volley_store::MemoryStore;
use volley_worker::{Registry, WorkerConfig, run_worker};

use super::OutputFormat;
use super::client::{Follow, OnInterrupt, submit_and_report};
use super::interrupt::Interrupts;
use crate::exit::{self, Exit};
use crate::telemetry;

/// Slots of each embedded worker by default. Measured on 20,000 no-ops with
/// two workers on two cores: 4 slots ran ~90k ops/s at 24 CPU us/op, 16
/// ~180k at 12.5, 64 ~180k at 7.5 (fewer, fuller messages per op).
const DEFAULT_SLOTS: u32 = 64;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The batch file (YAML or JSON).
    pub file: PathBuf,
    /// Workers to start (default: one per CPU).
    #[arg(long, env = "VOLLEY_WORKERS")]
    pub workers: Option<u32>,
    /// Slots of each worker: ops it runs at once. Embedded workers cost
    /// nothing to keep busy, and results and assignments travel many to a
    /// message, so the default is generous (a batch's `max_parallel` is
    /// what bounds heavy host programs).
    #[arg(long, env = "VOLLEY_SLOTS", default_value_t = DEFAULT_SLOTS)]
    pub slots: u32,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Where `${secret.NAME}` values come from, as `volley worker
    /// --secret-dir` (then VOLLEY_SECRET_<NAME> variables).
    #[arg(long, env = "VOLLEY_SECRET_DIR")]
    pub secret_dir: Option<PathBuf>,
    /// The most any op's output may hold (`16MiB`, `1GiB`, bytes), as
    /// `volley worker --max-output`.
    #[arg(long, env = "VOLLEY_MAX_OUTPUT", default_value = super::size_text(volley_worker::DEFAULT_MAX_OUTPUT), value_parser = volley_kinds::parse_byte_size)]
    pub max_output: u64,
    /// The directory file ops and `cwd` resolve against (the embedded
    /// workers' root); paths leaving it are refused before anything runs.
    /// Default: the current directory.
    #[arg(long, env = "VOLLEY_RUN_ROOT")]
    pub root: Option<PathBuf>,
    /// Also write each op's whole output to DIR/OP.out and its stderr to
    /// DIR/OP.err as the report is printed (DIR is created if missing).
    #[arg(long, value_name = "DIR", env = "VOLLEY_LOGS_DIR")]
    pub logs_dir: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: super::BatchOverrides,
}

pub async fn run(args: RunArgs) -> Exit {
    telemetry::init("warn");
    // Read and parse first: a broken file needs nothing started.
    exit::use_json_errors(matches!(args.output, OutputFormat::Json));
    if let Err(exit) = super::client::use_logs_dir(args.logs_dir.as_deref()) {
        return exit;
    }
    let mut batch = match volley_client::read_batch_file_with_warnings(&args.file) {
        Ok((batch, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            batch
        }
        Err(error) => return exit::batch_file_error(&error),
    };
    args.overrides.apply(&mut batch);
    if args.slots == 0 || args.workers == Some(0) {
        eprintln!("error: --workers and --slots must be at least 1");
        return Exit::Invalid;
    }
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|count| count.get() as u32)
            .unwrap_or(1)
    });
    let root = match &args.root {
        Some(root) => match std::fs::canonicalize(root) {
            Ok(root) if root.is_dir() => root,
            Ok(_) => {
                eprintln!("error: --root {}: not a directory", root.display());
                return Exit::Invalid;
            }
            Err(error) => {
                eprintln!("error: --root {}: {error}", root.display());
                return Exit::Invalid;
            }
        },
        None => match std::env::current_dir().and_then(std::fs::canonicalize) {
            Ok(root) => root,
            Err(error) => {
                eprintln!("error: cannot resolve the current directory: {error}");
                return Exit::Invalid;
            }
        },
    };
    // Only `volley run` knows its workers' root, so it checks paths against
    // it here; the coordinator's validation follows.
    let outside = volley_plan::paths_outside_root(&batch, &root);
    if !outside.is_empty() {
        let total = outside.len();
        return exit::client_error(&volley_client::ClientError::Invalid {
            message: format!("invalid batch: {total} problem(s)"),
            problems: outside
                .into_iter()
                .map(|problem| volley_client::v1::Problem {
                    op_id: problem.op_id,
                    field: problem.field,
                    message: problem.message,
                })
                .collect(),
            total,
        });
    }
    // From here on Ctrl-C and SIGTERM are ours: they stop the batch and its
    // programs instead of ending the process under them.
    let mut interrupts = match Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return Exit::Invalid;
        }
    };
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let exit = run_embedded(
        batch,
        EmbeddedWorkers {
            count: workers,
            slots: args.slots,
            max_output: usize::try_from(args.max_output).unwrap_or(usize::MAX),
            secret_dir: args.secret_dir.clone(),
        },
        root,
        args.output,
        &mut interrupts,
        &shutdown,
        &tasks,
    )
    .await;
    shutdown.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    // No host program outlives the run: whatever is still running now (a
    // worker that did not stop in time) is killed with its group.
    let killed = op_processes::signal_all(GroupSignal::Kill);
    if killed > 0 {
        tracing::warn!(killed, "killed host programs still running at exit");
    }
    exit
}

/// `volley run`'s first Ctrl-C (or SIGTERM), while it follows `batch_id`:
/// cancel the batch, so its ops end cancelled and not failed (the embedded
/// workers give each op's process group SIGTERM, then SIGKILL after
/// [`TERMINATE_GRACE`]); print its report; wait for the programs to be gone.
/// A second signal SIGKILLs every group at once. Exits 130 either way.
pub(crate) async fn stop_run(
    client: &Client,
    batch_id: &str,
    follow: std::pin::Pin<&mut impl std::future::Future<Output = Exit>>,
    interrupts: &mut Interrupts,
    signal: &str,
) -> Exit {
    let running = match client.summary(batch_id).await {
        Ok(summary) => summary.running as usize,
        Err(_) => op_processes::count(),
    };
    eprintln!(
        "{signal}: stopping: cancelling batch {batch_id} ({running} op(s) running; their programs get SIGTERM, then SIGKILL after {}s; Ctrl-C again to kill them at once)",
        TERMINATE_GRACE.as_secs()
    );
    let stop = async {
        if !super::client::cancel_and_follow(client, batch_id, follow).await {
            // No cancel reached the workers: signal the programs ourselves.
            op_processes::signal_all(GroupSignal::Terminate);
        }
        // The report may come before the programs are gone: they are still
        // in their grace. A little longer than it, then kill what is left.
        if !op_processes::wait_until_none(TERMINATE_GRACE + Duration::from_secs(2)).await {
            let killed = op_processes::signal_all(GroupSignal::Kill);
            eprintln!("killed {killed} program(s) that outlived their SIGTERM grace");
        }
    };
    tokio::select! {
        () = stop => {}
        signal = interrupts.next() => {
            let killed = op_processes::signal_all(GroupSignal::Kill);
            eprintln!("{signal} again: killed {killed} program(s) at once");
        }
    }
    Exit::Interrupted
}

/// A directory only this user may enter (0700), removed on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create() -> std::io::Result<PrivateDir> {
        super::private_temp_dir("volley-run").map(|path| PrivateDir { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The embedded workers `volley run` starts.
struct EmbeddedWorkers {
    count: u32,
    slots: u32,
    max_output: usize,
    secret_dir: Option<PathBuf>,
}

async fn run_embedded(
    batch: volley_client::v1::Batch,
    workers: EmbeddedWorkers,
    root: PathBuf,
    output: OutputFormat,
    interrupts: &mut Interrupts,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Exit {
    // Nothing of the batch runs yet: a signal now just ends the run.
    let (client, _socket_dir) = tokio::select! {
        started = start_embedded(workers, root, shutdown, tasks) => match started {
            Ok(started) => started,
            Err(exit) => return exit,
        },
        signal = interrupts.next() => {
            eprintln!("{signal}: stopped before the batch was submitted");
            return Exit::Interrupted;
        }
    };
    let follow = Follow::Yes {
        interrupts,
        on_interrupt: OnInterrupt::StopRun,
    };
    crate::render::reports_are_of_a_run();
    submit_and_report(&client, batch, follow, output).await
}

/// Starts the embedded coordinator and workers; the client once every
/// worker is connected, and the socket's directory (removed when dropped:
/// keep it until the run ends, ops' programs dial the socket).
async fn start_embedded(
    workers: EmbeddedWorkers,
    root: PathBuf,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(Client, PrivateDir), Exit> {
    // No TCP port: a Unix socket in a directory only this user may enter,
    // removed when the run ends. Ops' programs reach it through
    // VOLLEY_COORDINATOR (`unix://…`) like any other coordinator.
    let socket_dir = match PrivateDir::create() {
        Ok(directory) => directory,
        Err(error) => {
            eprintln!("error: cannot make a private directory for the run's socket: {error}");
            return Err(Exit::Unreachable);
        }
    };
    let socket = socket_dir.path.join("coordinator.sock");
    let listener = match tokio::net::UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", socket.display());
            return Err(Exit::Unreachable);
        }
    };
    let store = Arc::new(MemoryStore::new());
    // Besides the socket's directory, a token only this process knows (and
    // ops get their own capability tokens, as on a cluster).
    let admin_token = super::random_token();
    let config = CoordinatorConfig {
        auth: AuthConfig::Tokens {
            admin_token: admin_token.clone(),
        },
        ..CoordinatorConfig::default()
    };
    let coordinator = match Coordinator::start(store, config, shutdown.child_token()).await {
        Ok(coordinator) => coordinator,
        Err(error) => {
            eprintln!("error: cannot start the embedded coordinator: {error}");
            return Err(Exit::Unreachable);
        }
    };
    {
        let coordinator = coordinator.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = volley_coordinator::grpc::serve_unix(
                listener,
                coordinator.clone(),
                shutdown.clone(),
            )
            .await
            {
                tracing::error!(%error, "embedded coordinator failed");
            }
            coordinator.wait().await;
        });
    }
    let url = format!("unix://{}", socket.display());
    for number in 1..=workers.count {
        let mut config = WorkerConfig::new(url.clone());
        config.slots = workers.slots;
        config.worker_id = Some(format!("local-{number}"));
        config.root = Some(root.clone());
        config.allow_shell = true;
        // Embedded runs end when the batch does: nothing to drain.
        config.drain_timeout = Duration::from_secs(1);
        config.token = Some(admin_token.clone());
        config.max_output = workers.max_output;
        let secrets = volley_builtins::secrets::Secrets::from_dir(workers.secret_dir.clone());
        for name in secrets.names() {
            config.labels.insert(
                format!("{}{name}", volley_plan::SECRET_LABEL_PREFIX),
                "1".to_owned(),
            );
        }
        let registry = Registry::with_builtins(&BuiltinConfig {
            root: Some(root.clone()),
            allow_shell: true,
            secrets: volley_builtins::secrets::Secrets::from_dir(workers.secret_dir.clone()),
        });
        let shutdown = shutdown.child_token();
        tasks.spawn(async move {
            if let Err(error) = run_worker(config, registry, shutdown).await {
                tracing::error!(%error, "embedded worker failed");
            }
        });
    }
    let connection = Connection::new(url).with_token(admin_token);
    let client = match Client::connect_with(&connection).await {
        Ok(client) => client,
        Err(error) => return Err(exit::client_error(&error)),
    };
    match client
        .wait_for_workers(workers.count as usize, Duration::from_secs(10))
        .await
    {
        Ok(connected) if connected >= workers.count as usize => {}
        Ok(connected) => {
            eprintln!(
                "error: only {connected} of {} embedded workers connected",
                workers.count
            );
            return Err(Exit::Unreachable);
        }
        Err(error) => return Err(exit::client_error(&error)),
    }
    Ok((client, socket_dir))
}
