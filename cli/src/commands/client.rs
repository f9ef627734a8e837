//! Commands that talk to a running cluster: submit, watch, status, cancel,
//! list, workers.

use std::path::PathBuf;

use clap::Args;
use volley_client::{Client, v1};

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
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    submit_and_report(&client, batch, args.watch, args.output).await
}

/// Submits, then either prints the id or follows the batch to its report.
/// Shared by `submit` and `run`.
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
