//! Commands that talk to a running cluster: submit, watch, status, cancel,
//! list, workers.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use volley_client::{Client, v1};

use super::OutputFormat;
use super::interrupt::Interrupts;
use crate::exit::{self, Exit};
use crate::{render, telemetry};

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The coordinator's gRPC address (`https://` always means TLS).
    #[arg(
        long,
        global = true,
        env = "VOLLEY_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,
    #[command(flatten)]
    pub credentials: super::CredentialArgs,
}

impl ClusterArgs {
    /// The coordinator, the token and TLS files as one connection; a token
    /// file that cannot be read is an invalid command line.
    pub fn connection(&self) -> Result<volley_client::Connection, Exit> {
        self.credentials.connection(&self.coordinator)
    }
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The batch file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Follow the batch until it finishes and print its report.
    #[arg(long, env = "VOLLEY_WATCH", default_value_t = false)]
    pub watch: bool,
    /// With --watch: a Ctrl-C (or SIGTERM) cancels the batch and prints its
    /// report, instead of leaving it running.
    #[arg(long, env = "VOLLEY_CANCEL_ON_INTERRUPT", default_value_t = false)]
    pub cancel_on_interrupt: bool,
    #[command(flatten)]
    pub overrides: super::BatchOverrides,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Resume after this event sequence number.
    #[arg(long, env = "VOLLEY_AFTER_SEQ", default_value_t = 0)]
    pub after: u64,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, env = "VOLLEY_LIMIT", default_value_t = 20)]
    pub limit: u32,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub(crate) async fn connect(cluster: &ClusterArgs) -> Result<Client, Exit> {
    Client::connect_with(&cluster.connection()?)
        .await
        .map_err(|error| exit::client_error(&error))
}

pub async fn submit(args: SubmitArgs) -> Exit {
    telemetry::init("warn");
    if args.cancel_on_interrupt && !args.watch {
        eprintln!(
            "error: --cancel-on-interrupt needs --watch (without it, submit returns as soon as the batch is in)"
        );
        return Exit::Invalid;
    }
    let mut batch = match volley_client::read_batch_file(&args.file) {
        Ok(batch) => batch,
        Err(error) => return exit::batch_file_error(&error),
    };
    args.overrides.apply(&mut batch);
    // Listening before anything is sent: a Ctrl-C at any point is answered.
    let mut interrupts = if args.watch {
        match Interrupts::listen() {
            Ok(interrupts) => Some(interrupts),
            Err(error) => {
                eprintln!("error: cannot listen for signals: {error}");
                return Exit::Invalid;
            }
        }
    } else {
        None
    };
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let follow = match interrupts.as_mut() {
        None => Follow::No,
        Some(interrupts) => Follow::Yes {
            interrupts,
            on_interrupt: if args.cancel_on_interrupt {
                OnInterrupt::Cancel
            } else {
                OnInterrupt::KeepRunning
            },
        },
    };
    submit_and_report(&client, batch, follow, args.output).await
}

/// What [`submit_and_report`] does once the batch is in.
pub(crate) enum Follow<'a> {
    /// Print the batch's id and return.
    No,
    /// Follow the batch to its report; the first Ctrl-C (or SIGTERM) does
    /// `on_interrupt`.
    Yes {
        interrupts: &'a mut Interrupts,
        on_interrupt: OnInterrupt,
    },
}

/// What the first Ctrl-C (or SIGTERM) does to a batch the CLI follows. A
/// second one always ends the CLI at once. Either way it exits 130.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    /// The batch goes on: say so, and how to cancel it.
    KeepRunning,
    /// Cancel the batch, wait (bounded) for the cancellation to be
    /// reported, print the report.
    Cancel,
    /// `volley run`: cancel the batch, print the report, and wait for the
    /// ops' host programs (SIGTERM, then SIGKILL) to be gone.
    StopRun,
}

/// How long a cancelled batch may take to report that it ended before the
/// CLI stops waiting (it exits 130 either way).
const CANCEL_REPORT_WAIT: Duration = Duration::from_secs(30);

/// Submits, then either prints the id or follows the batch to its report.
/// Shared by `submit` and `run`.
pub(crate) async fn submit_and_report(
    client: &Client,
    batch: v1::Batch,
    follow: Follow<'_>,
    output: OutputFormat,
) -> Exit {
    let total = batch.ops.len() as u32;
    let submitted = match client.submit(batch).await {
        Ok(submitted) => submitted,
        Err(error) => return exit::client_error(&error),
    };
    for warning in &submitted.warnings {
        eprintln!("warning: {warning}");
    }
    let Follow::Yes {
        interrupts,
        on_interrupt,
    } = follow
    else {
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({"batch_id": submitted.batch_id, "op_count": submitted.op_count, "warnings": submitted.warnings})
            ),
            OutputFormat::Table => println!("{}", submitted.batch_id),
        }
        return Exit::Success;
    };
    if output == OutputFormat::Table {
        eprintln!(
            "batch {} submitted: {} ops",
            submitted.batch_id, submitted.op_count
        );
    }
    follow_interruptibly(
        client,
        &submitted.batch_id,
        0,
        total,
        output,
        interrupts,
        on_interrupt,
    )
    .await
}

/// Follows a batch to its report, as [`follow_to_report`], until a Ctrl-C
/// (or SIGTERM): then does `on_interrupt` and exits 130.
async fn follow_interruptibly(
    client: &Client,
    batch_id: &str,
    after: u64,
    total: u32,
    output: OutputFormat,
    interrupts: &mut Interrupts,
    on_interrupt: OnInterrupt,
) -> Exit {
    let follow = follow_to_report(client, batch_id, after, total, output);
    tokio::pin!(follow);
    let signal = tokio::select! {
        exit = &mut follow => return exit,
        signal = interrupts.next() => signal,
    };
    match on_interrupt {
        OnInterrupt::KeepRunning => {
            eprintln!(
                "{signal}: batch {batch_id} keeps running; cancel it with `volley cancel {batch_id}`"
            );
            Exit::Interrupted
        }
        OnInterrupt::Cancel => {
            eprintln!(
                "{signal}: cancelling batch {batch_id} (Ctrl-C again to stop waiting for it)"
            );
            let cancel_and_report = cancel_and_follow(client, batch_id, follow.as_mut());
            tokio::select! {
                _ = cancel_and_report => {}
                signal = interrupts.next() => {
                    eprintln!(
                        "{signal} again: not waiting; batch {batch_id} was asked to cancel (see `volley status {batch_id}`)"
                    );
                }
            }
            Exit::Interrupted
        }
        OnInterrupt::StopRun => {
            super::run::stop_run(client, batch_id, follow.as_mut(), interrupts, signal).await
        }
    }
}

/// Cancels the batch, then lets `follow` (already following it) run to the
/// report, up to [`CANCEL_REPORT_WAIT`]. Errors are printed, not returned:
/// the caller exits 130 either way. False if the cancel was refused.
pub(crate) async fn cancel_and_follow(
    client: &Client,
    batch_id: &str,
    follow: std::pin::Pin<&mut impl std::future::Future<Output = Exit>>,
) -> bool {
    if let Err(error) = client.cancel(batch_id).await {
        exit::client_error(&error);
        return false;
    }
    if tokio::time::timeout(CANCEL_REPORT_WAIT, follow)
        .await
        .is_err()
    {
        eprintln!(
            "error: batch {batch_id} did not report its end within {}s of the cancel; see `volley status {batch_id}`",
            CANCEL_REPORT_WAIT.as_secs()
        );
    }
    true
}

async fn follow_to_report(
    client: &Client,
    batch_id: &str,
    after: u64,
    total: u32,
    output: OutputFormat,
) -> Exit {
    let events = match client.watch(batch_id, after).await {
        Ok(events) => events,
        Err(error) => return exit::client_error(&error),
    };
    if let Err(error) = render::follow(events, total, output).await {
        return exit::client_error(&error);
    }
    match render::print_report(client, batch_id, output).await {
        Ok(status) => Exit::for_state(status.state()),
        Err(error) => exit::client_error(&error),
    }
}

pub async fn watch(args: WatchArgs) -> Exit {
    telemetry::init("warn");
    // A watch only looks: a Ctrl-C leaves the batch running, and says so.
    let mut interrupts = match Interrupts::listen() {
        Ok(interrupts) => interrupts,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return Exit::Invalid;
        }
    };
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let total = match client.summary(&args.batch_id).await {
        Ok(summary) => summary.total,
        Err(error) => return exit::client_error(&error),
    };
    follow_interruptibly(
        &client,
        &args.batch_id,
        args.after,
        total,
        args.output,
        &mut interrupts,
        OnInterrupt::KeepRunning,
    )
    .await
}

pub async fn status(args: StatusArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match render::print_report(&client, &args.batch_id, args.output).await {
        Ok(status) => Exit::for_state(status.state()),
        Err(error) => exit::client_error(&error),
    }
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    pub batch_id: String,
    pub op_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub async fn why(args: WhyArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.why(&args.batch_id, &args.op_id).await {
        Ok(response) => {
            println!(
                "{}: {}",
                response.op_id,
                render::op_state_word(response.state())
            );
            for reason in &response.reasons {
                println!("  - {reason}");
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn cancel(args: CancelArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.cancel(&args.batch_id).await {
        Ok(response) => {
            println!(
                "{}: {} ops cancelled",
                render::state_word(response.state()),
                response.cancelled
            );
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn list(args: ListArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.list(args.limit).await {
        Ok(batches) => {
            match args.output {
                OutputFormat::Json => {
                    let rows: Vec<_> = batches
                        .iter()
                        .map(|batch| serde_json::json!({"batch_id": batch.batch_id, "name": batch.name, "state": render::state_word(batch.state()), "created_at_ms": batch.created_at_ms, "total": batch.total, "done": batch.done, "tenant": batch.tenant}))
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                }
                OutputFormat::Table => {
                    for batch in &batches {
                        println!(
                            "{}  {:<10} {:>7}/{:<7} {}",
                            batch.batch_id,
                            render::state_word(batch.state()),
                            batch.done,
                            batch.total,
                            batch.name
                        );
                    }
                }
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}

pub async fn workers(args: WorkersArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.workers().await {
        Ok(workers) => {
            match args.output {
                OutputFormat::Json => {
                    let rows: Vec<_> = workers
                        .iter()
                        .map(|worker| serde_json::json!({"worker_id": worker.worker_id, "slots": worker.slots, "busy": worker.busy, "kinds": worker.kinds, "labels": worker.labels}))
                        .collect();
                    println!("{}", serde_json::Value::Array(rows));
                }
                OutputFormat::Table => {
                    for worker in &workers {
                        let mut kinds = worker.kinds.clone();
                        kinds.sort();
                        println!(
                            "{}  busy {}/{}  kinds {}",
                            worker.worker_id,
                            worker.busy,
                            worker.slots,
                            kinds.join(",")
                        );
                    }
                }
            }
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}
