//! `volley`: the one user-facing binary. Data goes to stdout, everything
//! else (progress, logs) to stderr.
//!
//! Exit codes (the CLI contract): 0 every op succeeded; 1 the batch ran and
//! some op failed or was cancelled; 2 the batch or the command line is
//! invalid (nothing ran); 3 the cluster could not be reached; 4 (`volley
//! health` only) the server answered but is not SERVING; 5 no token, or one
//! the coordinator refuses (unknown, expired, revoked); 6 the token's role
//! or tenant may not do this; 130 Ctrl-C (SIGINT) or SIGTERM stopped `run`,
//! `submit --watch` or `watch` (stderr says what became of the batch).

// The binary writes its data to stdout by design (libraries never do).
#![allow(clippy::print_stdout)]

mod commands;
mod exit;
mod render;
mod telemetry;

use clap::{Parser, Subcommand};

use crate::exit::Exit;

#[derive(Parser, Debug)]
#[command(
    name = "volley",
    version,
    about = "Run batches of operations as fast as their dependencies allow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a batch file on this machine: embedded coordinator and workers, no Redis.
    Run(commands::run::RunArgs),
    /// Serve the coordinator: accept batches, dispatch to workers, keep state in Redis.
    Coordinator(commands::coordinator::CoordinatorArgs),
    /// Serve a worker: run ops the coordinator assigns.
    Worker(commands::worker::WorkerArgs),
    /// Submit a batch file to a cluster.
    Submit(commands::client::SubmitArgs),
    /// Follow a batch's events until it finishes, then print its report.
    Watch(commands::client::WatchArgs),
    /// Print a batch's report.
    Status(commands::client::StatusArgs),
    /// Why an op is not running: what it waits for, which workers could take it.
    Why(commands::client::WhyArgs),
    /// One op's whole output (stdout) and stderr: `volley logs BATCH OP`.
    Logs(commands::client::LogsArgs),
    /// Cancel a batch: pending ops at once, running ones are told to stop.
    Cancel(commands::client::CancelArgs),
    /// Write a batch's whole record as one JSON document: `volley export ID > batch.json`.
    Export(commands::export::ExportArgs),
    /// Show an exported batch in the dashboard, read-only: `volley dashboard --file batch.json`.
    Dashboard(commands::dashboard::DashboardArgs),
    /// List recent batches.
    List(commands::client::ListArgs),
    /// List connected workers.
    Workers(commands::client::WorkersArgs),
    /// Read and write memory: a batch's own, or a shared namespace.
    Memory(commands::memory::MemoryArgs),
    /// Add ops from a file to a running batch (what agents do to fan out).
    Spawn(commands::spawn::SpawnArgs),
    /// Manage API tokens (admin): create, ls, revoke, whoami.
    Token(commands::token::TokenArgs),
    /// Ask a coordinator (or a worker's health address) whether it is SERVING.
    #[command(after_help = commands::health::EXIT_CODES_HELP)]
    Health(commands::health::HealthArgs),
    /// Start a local cluster to try Volley: redis-server, a coordinator and workers.
    #[command(after_help = commands::up::UP_HELP)]
    Up(commands::up::UpArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::set_default_service_name(match &cli.command {
        Command::Coordinator(_) => "volley-coordinator",
        Command::Worker(_) => "volley-worker",
        Command::Run(_) => "volley-run",
        _ => "volley-client",
    });
    if matches!(cli.command, Command::Run(_)) {
        limit_malloc_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return Exit::Invalid.into();
        }
    };
    let exit = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Coordinator(args) => commands::coordinator::run(args).await,
            Command::Worker(args) => commands::worker::run(args).await,
            Command::Submit(args) => commands::client::submit(args).await,
            Command::Watch(args) => commands::client::watch(args).await,
            Command::Status(args) => commands::client::status(args).await,
            Command::Cancel(args) => commands::client::cancel(args).await,
            Command::Why(args) => commands::client::why(args).await,
            Command::Logs(args) => commands::client::logs(args).await,
            Command::Export(args) => commands::export::run(args).await,
            Command::Dashboard(args) => commands::dashboard::run(args).await,
            Command::List(args) => commands::client::list(args).await,
            Command::Workers(args) => commands::client::workers(args).await,
            Command::Memory(args) => commands::memory::run(args).await,
            Command::Spawn(args) => commands::spawn::run(args).await,
            Command::Token(args) => commands::token::run(args).await,
            Command::Health(args) => commands::health::run(args).await,
            Command::Up(args) => commands::up::run(args).await,
        }
    });
    // Every command ends here, a server's after SIGTERM/SIGINT too: send
    // the spans not exported yet while the runtime still runs the exporter.
    runtime.block_on(telemetry::shutdown());
    // Dropping a runtime waits for blocking tasks; don't let a stuck one
    // hold the exit code hostage.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    exit.into()
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per
/// core), and memory freed in one arena is reused only by its threads.
/// `volley run` parses a batch on one thread, decodes it on others and plans
/// it on a blocking one: with an arena each, a million-op batch's freed
/// memory was not reused, and its peak RSS went from 0.87 to 1.3 GiB as the
/// machine got busier. With two arenas it stays at 0.81-0.83 GiB, and runs
/// as fast (one arena: 0.77 GiB, but 30% slower). An explicit
/// `MALLOC_ARENA_MAX` is left alone. Before the runtime starts any thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt takes two integers and only changes glibc's malloc
    // settings; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
