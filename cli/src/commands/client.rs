//! Commands that talk to a running cluster: submit, watch, status, cancel,
//! list, workers.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use volley_client::{Client, ClientError, v1};

use super::OutputFormat;
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
    #[command(flatten)]
    pub overrides: super::BatchOverrides,
    #[arg(long, value_enum, env = "VOLLEY_OUTPUT", default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub idempotency: IdempotencyArgs,
}

#[derive(Args, Debug, Clone)]
pub struct IdempotencyArgs {
    /// Sent with the call so that trying it again can never do it twice:
    /// the same key with the same batch (or ops) gives back the first
    /// call's answer — the same batch id — on any coordinator of the
    /// cluster. At most 128 bytes of printable ASCII. Default: a new
    /// random key for each command, kept across its own retries.
    #[arg(long, env = "VOLLEY_IDEMPOTENCY_KEY", default_value = "")]
    pub idempotency_key: String,
}

impl IdempotencyArgs {
    /// The key to send: the one given, or a new one.
    pub fn key(&self) -> String {
        if self.idempotency_key.is_empty() {
            volley_client::client::new_idempotency_key()
        } else {
            self.idempotency_key.clone()
        }
    }
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
    let mut batch = match volley_client::read_batch_file(&args.file) {
        Ok(batch) => batch,
        Err(error) => return exit::batch_file_error(&error),
    };
    args.overrides.apply(&mut batch);
    let total = batch.ops.len() as u32;
    let key = args.idempotency.key();
    let submitted = call_with_retries(&args.cluster, "submission", &key, |client| {
        let batch = batch.clone();
        let key = key.clone();
        async move {
            let submitted = client.submit_idempotent(batch, &key).await?;
            Ok((client, submitted))
        }
    })
    .await;
    let (client, submitted) = match submitted {
        Ok(done) => done,
        Err(exit) => return exit,
    };
    report_submitted(&client, submitted, total, args.watch, args.output).await
}

/// How often a submit or spawn whose connection broke is tried in all, and
/// the pause before the first retry (doubling: 0.25, 0.5, 1, 2, 4 s, so
/// about 10 s with the connection attempts). Each retry connects anew, so
/// behind a balancer it reaches another coordinator; the idempotency key
/// makes it safe whether or not the broken call took effect.
const CALL_TRIES: u32 = 6;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// True for the failures another try (on a new connection) may cure: the
/// coordinator could not be reached, the connection broke under the call,
/// or it could not serve it now.
fn worth_retrying(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Unreachable { .. } | ClientError::Transport(_) | ClientError::Unavailable(_)
    )
}

/// Connects and makes `call`, again on a new connection (same key) while
/// it fails in a way a retry may cure; then gives up with exit 3 and says
/// whether the call may have taken effect and which key retries it safely.
pub(crate) async fn call_with_retries<T, Call, Answer>(
    cluster: &ClusterArgs,
    what: &str,
    key: &str,
    mut call: Call,
) -> Result<T, Exit>
where
    Call: FnMut(Client) -> Answer,
    Answer: Future<Output = Result<T, ClientError>>,
{
    let connection = cluster.connection()?;
    let mut pause = FIRST_RETRY_PAUSE;
    // Whether a call went out on a connection: then it may have taken effect.
    let mut sent = false;
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match Client::connect_with(&connection).await {
            Ok(client) => {
                sent = true;
                match call(client).await {
                    Ok(answer) => return Ok(answer),
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        if !worth_retrying(&error) {
            return Err(exit::client_error(&error));
        }
        if tries >= CALL_TRIES {
            eprintln!("error: {error}");
            if sent {
                eprintln!(
                    "error: the {what} may or may not have taken effect; to retry it safely, run the same command with --idempotency-key {key}"
                );
            } else {
                eprintln!("error: the {what} was not sent (tried {tries} times)");
            }
            return Err(Exit::Unreachable);
        }
        tracing::warn!(%error, try_number = tries, "retrying with the same idempotency key");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// Submits, then either prints the id or follows the batch to its report
/// (`volley run`: its own coordinator, in this process).
pub async fn submit_and_report(
    client: &Client,
    batch: v1::Batch,
    watch: bool,
    output: OutputFormat,
) -> Exit {
    let total = batch.ops.len() as u32;
    let submitted = match client.submit(batch).await {
        Ok(submitted) => submitted,
        Err(error) => return exit::client_error(&error),
    };
    report_submitted(client, submitted, total, watch, output).await
}

/// Prints a submission's id, or follows the batch to its report.
async fn report_submitted(
    client: &Client,
    submitted: v1::SubmitBatchResponse,
    total: u32,
    watch: bool,
    output: OutputFormat,
) -> Exit {
    for warning in &submitted.warnings {
        eprintln!("warning: {warning}");
    }
    if !watch {
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({"batch_id": submitted.batch_id, "op_count": submitted.op_count, "warnings": submitted.warnings})
            ),
            OutputFormat::Table => println!("{}", submitted.batch_id),
        }
        return Exit::Success;
    }
    if output == OutputFormat::Table {
        eprintln!(
            "batch {} submitted: {} ops",
            submitted.batch_id, submitted.op_count
        );
    }
    follow_to_report(client, &submitted.batch_id, 0, total, output).await
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
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let total = match client.summary(&args.batch_id).await {
        Ok(summary) => summary.total,
        Err(error) => return exit::client_error(&error),
    };
    follow_to_report(&client, &args.batch_id, args.after, total, args.output).await
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
