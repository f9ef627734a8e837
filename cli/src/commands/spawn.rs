//! `volley spawn FILE`: adds ops to a running batch — what an `agent` does
//! to fan out work it discovers while it runs. The file is a batch file
//! whose `ops` are added; the batch and the spawning op come from the
//! environment the worker gives agents (`VOLLEY_BATCH`, `VOLLEY_OP`). A
//! call whose connection broke is retried with the same idempotency key,
//! so the ops are added once; an op's spawn without a key gets one derived
//! from the op and its ops, so the op's next attempt spawning them again is
//! answered as the first.

use std::path::PathBuf;

use clap::Args;

use super::client::{ClusterArgs, IdempotencyArgs, call_with_retries};
use crate::exit::{self, Exit};
use crate::telemetry;

#[derive(Args, Debug)]
pub struct SpawnArgs {
    /// A batch file (YAML or JSON) whose ops are added.
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The running batch to grow (its id, or a unique prefix of it).
    #[arg(long, env = "VOLLEY_BATCH")]
    pub batch: String,
    /// The op that spawns (recorded with the new ops).
    #[arg(long, env = "VOLLEY_OP", default_value = "")]
    pub op: String,
    #[command(flatten)]
    pub idempotency: IdempotencyArgs,
}

pub async fn run(args: SpawnArgs) -> Exit {
    telemetry::init("warn");
    let batch = match volley_client::read_batch_file(&args.file) {
        Ok(batch) => batch,
        Err(error) => return exit::batch_file_error(&error),
    };
    // An op spawning (an agent: VOLLEY_OP is set) without a key of its own
    // gets one derived from it and its ops, so its next attempt spawning
    // the same ops is answered as the first, not refused as duplicates.
    let key = if args.idempotency.idempotency_key.is_empty() && !args.op.is_empty() {
        let mut ops = batch.ops.clone();
        volley_proto::digest::op_spawn_key(&args.op, &mut ops)
    } else {
        args.idempotency.key()
    };
    // `--batch` takes a unique prefix of the id, as `status` does (an
    // agent's VOLLEY_BATCH is always whole: no call for it).
    let batch_id = if super::client::is_whole_batch_id(args.batch.trim()) {
        args.batch.trim().to_owned()
    } else {
        let client = match super::client::connect(&args.cluster).await {
            Ok(client) => client,
            Err(exit) => return exit,
        };
        match super::client::resolve_batch_id(&client, &args.batch).await {
            Ok(batch_id) => batch_id,
            Err(exit) => return exit,
        }
    };
    let spawned = call_with_retries(&args.cluster, "spawn", &key, |client| {
        let ops = batch.ops.clone();
        let (batch_id, op, key) = (batch_id.clone(), args.op.clone(), key.clone());
        async move { client.spawn_ops_idempotent(&batch_id, ops, &op, &key).await }
    })
    .await;
    match spawned {
        Ok(response) => {
            for warning in &response.warnings {
                eprintln!("warning: {warning}");
            }
            eprintln!("{} op(s) added to batch {batch_id}", response.op_count);
            Exit::Success
        }
        Err(exit) => exit,
    }
}
