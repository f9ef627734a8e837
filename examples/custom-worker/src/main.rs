//! A Volley worker with two user-defined kinds: `wordcount` (pure) and
//! `split` (uses the op's memory and spawns ops). It depends on the worker
//! SDK alone; the built-in kinds (`echo`, `shell`, …) run on `volley worker`s
//! beside it (or add `volley-builtins` and `Registry::with_builtins`).
//!
//! Usage: `custom-worker [COORDINATOR_URL]` (or `VOLLEY_COORDINATOR`), default
//! `http://127.0.0.1:7070`. Ctrl-C drains running ops and exits.

use async_trait::async_trait;
use volley_worker::v1::Op;
use volley_worker::{
    CancellationToken, Handler, HandlerError, OpContext, OpOutput, Registry, WorkerConfig,
    run_worker,
};

/// `wordcount {text}` → the number of whitespace-separated words in `text`.
struct WordCount;

#[async_trait]
impl Handler for WordCount {
    async fn run(
        &self,
        _ctx: &OpContext,
        args: serde_json::Value,
    ) -> Result<OpOutput, HandlerError> {
        let text = args
            .get("text")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| HandlerError::permanent("wordcount needs args.text (a string)"))?;
        let words = text.split_whitespace().count();
        Ok(OpOutput::text(words.to_string()).with_details(serde_json::json!({"words": words})))
    }
}

/// `split {text}` → adds one `wordcount` op per line of `text` to the running
/// batch, and counts in the batch's memory (`splits`) how often it ran.
struct Split;

#[async_trait]
impl Handler for Split {
    async fn run(
        &self,
        ctx: &OpContext,
        args: serde_json::Value,
    ) -> Result<OpOutput, HandlerError> {
        let text = args
            .get("text")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| HandlerError::permanent("split needs args.text (a string)"))?;
        let ops = text
            .lines()
            .enumerate()
            .map(|(index, line)| Op {
                id: format!("{}-line-{index}", ctx.op_id()),
                kind: "wordcount".to_owned(),
                args_json: serde_json::json!({ "text": line }).to_string(),
                ..Op::default()
            })
            .collect();
        // An invalid spawn fails this op permanently, with the problems in its details.
        let outcome = ctx.spawn(ops).await?;
        let runs = ctx.memory().incr("splits", 1).await?;
        Ok(OpOutput::text(outcome.op_count.to_string())
            .with_details(serde_json::json!({"warnings": outcome.warnings, "runs": runs})))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let coordinator = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("VOLLEY_COORDINATOR").ok())
        .unwrap_or_else(|| volley_worker::DEFAULT_COORDINATOR_URL.to_owned());

    // Only this worker's own kinds: the coordinator routes every other op
    // to a worker that advertises its kind.
    let mut registry = Registry::new();
    registry.register("wordcount", WordCount);
    registry.register("split", Split);

    let mut config = WorkerConfig::new(coordinator);
    // A worker (or admin) token: `volley token create --role worker`.
    config.token = std::env::var("VOLLEY_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    run_worker(config, registry, shutdown).await?;
    Ok(())
}
