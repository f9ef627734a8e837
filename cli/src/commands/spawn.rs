//! `volley spawn FILE`: adds ops to a running batch — what an `agent` does
//! to fan out work it discovers while it runs. The file is a batch file
//! whose `ops` are added; the batch and the spawning op come from the
//! environment the worker gives agents (`VOLLEY_BATCH`, `VOLLEY_OP`).

use std::path::PathBuf;

use clap::Args;

use super::client::ClusterArgs;
use crate::exit::{self, Exit};
use crate::telemetry;

#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// A batch file (YAML or JSON) whose ops are added.
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The running batch to grow.
    #[arg(long, env = "VOLLEY_BATCH")]
    pub batch: String,
    /// The op that spawns (recorded with the new ops).
    #[arg(long, env = "VOLLEY_OP", default_value = "")]
    pub op: String,
}

pub async fn run(args: SpawnArgs) -> Exit {
    telemetry::init("warn");
    let batch = match volley_client::read_batch_file(&args.file) {
        Ok(batch) => batch,
        Err(error) => return exit::batch_file_error(&error),
    };
    let client = match super::client::connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client.spawn_ops(&args.batch, batch.ops, &args.op).await {
        Ok(response) => {
            for warning in &response.warnings {
                eprintln!("warning: {warning}");
            }
            eprintln!("{} op(s) added to batch {}", response.op_count, args.batch);
            Exit::Success
        }
        Err(error) => exit::client_error(&error),
    }
}
