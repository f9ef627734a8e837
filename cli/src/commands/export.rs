//! `volley export ID > batch.json`: a batch's whole record as one JSON
//! document (format `volley-batch-export/1`, docs/dashboard-api.md), which
//! `volley dashboard --file` shows after the cluster or its retention is
//! gone.
//!
//! Everything is read through the public gRPC API with the caller's token
//! (status pages, plan pages for the args — masked by the coordinator with
//! the dashboard's own masking — the event stream from seq 0, memory
//! list/get), so it works against any cluster and a tenant exports only its
//! own batches. A batch with a shared namespace exports that namespace's
//! keys (its memory). A coordinator too old to give plan pages leaves the
//! args `null`.
//! The document is written as it is read: ops page by page, events as the
//! watch yields them, memory key by key — a 100,000-op batch's outputs are
//! never held in memory, let alone twice. Only the op ids, their
//! dependencies and groups are kept, to write the graph at the end.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use volley_client::{Client, ClientError, Scope, v1};
use volley_dashboard::export::{
    EXPORT_FORMAT, ExportedEvent, ExportedGraph, ExportedGroup, ExportedKey, ExportedOp,
};
use volley_proto::streams::{OpStreams, streams};
use volley_proto::words;

use super::client::{ClusterArgs, connect, resolve_batch_id};
use crate::exit::{self, Exit};
use crate::telemetry;

/// Ops per status page (the report's page size).
const EXPORT_PAGE_OPS: u32 = 1_000;
/// Keys per memory list call (the coordinator's largest page).
const MEMORY_PAGE_KEYS: u32 = 1_000;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The batch (its id, or a unique prefix of it).
    pub batch_id: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Memory values larger than this are listed without their value.
    #[arg(long, env = "VOLLEY_EXPORT_MAX_VALUE_BYTES", default_value_t = 64 * 1024)]
    pub max_value_bytes: u64,
    /// The most memory keys exported (the rest are counted as truncated).
    #[arg(long, env = "VOLLEY_EXPORT_MAX_KEYS", default_value_t = 10_000)]
    pub max_keys: usize,
    /// For a batch still running: the export ends once the event stream
    /// has been quiet this long (it has caught up).
    #[arg(long, env = "VOLLEY_EXPORT_EVENTS_IDLE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub events_idle: Duration,
}

/// What stops an export half way: the cluster, or stdout.
enum Failed {
    Client(ClientError),
    Output(io::Error),
}

impl From<ClientError> for Failed {
    fn from(error: ClientError) -> Failed {
        Failed::Client(error)
    }
}

impl From<io::Error> for Failed {
    fn from(error: io::Error) -> Failed {
        Failed::Output(error)
    }
}

impl From<serde_json::Error> for Failed {
    fn from(error: serde_json::Error) -> Failed {
        Failed::Output(io::Error::from(error))
    }
}

pub async fn run(args: ExportArgs) -> Exit {
    telemetry::init("warn");
    let client = match connect(&args.cluster).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let batch_id = match resolve_batch_id(&client, &args.batch_id).await {
        Ok(batch_id) => batch_id,
        Err(exit) => return exit,
    };
    // Checked before anything is written, so a batch the token may not
    // read leaves stdout empty.
    let first_page = match client.status_page(&batch_id, 0, EXPORT_PAGE_OPS).await {
        Ok(page) => page,
        Err(error) => return exit::client_error(&error),
    };
    let first_plan = match plan_page(&client, &batch_id, 0).await {
        Ok(page) => page,
        Err(error) => return exit::client_error(&error),
    };
    let mut out = io::BufWriter::with_capacity(256 * 1024, io::stdout());
    let written = export(&client, &batch_id, first_page, first_plan, &args, &mut out).await;
    let flushed = written.and_then(|()| out.flush().map_err(Failed::from));
    match flushed {
        Ok(()) => Exit::Success,
        Err(Failed::Client(error)) => {
            eprintln!(
                "error: the export of batch {batch_id} stopped half way; its file is incomplete"
            );
            exit::client_error(&error)
        }
        Err(Failed::Output(error)) => {
            eprintln!("error: cannot write the export: {error}");
            Exit::Invalid
        }
    }
}

/// The plan page of the ops from `offset`: `None` from a coordinator that
/// predates plan pages.
async fn plan_page(
    client: &Client,
    batch_id: &str,
    offset: u32,
) -> Result<Option<v1::BatchPlanPage>, ClientError> {
    match client.batch_plan(batch_id, offset, EXPORT_PAGE_OPS).await {
        Ok(page) => Ok(Some(page)),
        Err(ClientError::Other {
            code: tonic::Code::Unimplemented,
            ..
        }) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn export(
    client: &Client,
    batch_id: &str,
    mut first_page: v1::BatchStatus,
    first_plan: Option<v1::BatchPlanPage>,
    args: &ExportArgs,
    out: &mut impl Write,
) -> Result<(), Failed> {
    let namespace = first_plan
        .as_ref()
        .map(|plan| plan.namespace.clone())
        .filter(|namespace| !namespace.is_empty());
    let tenant = match client.list(1000).await {
        Ok(batches) => batches
            .into_iter()
            .find(|batch| batch.batch_id == batch_id)
            .map(|batch| batch.tenant)
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    write!(
        out,
        "{{\"format\":{},\"exported_at_ms\":{},\"exported_by\":{},\n\"batch\":",
        json!(EXPORT_FORMAT),
        now_ms(),
        json!(format!("volley {}", env!("CARGO_PKG_VERSION")))
    )?;
    serde_json::to_writer(
        &mut *out,
        &header(&first_page, &tenant, namespace.as_deref()),
    )?;

    // Ops, page by page; only ids, dependencies and groups are kept.
    out.write_all(b",\n\"ops\":[\n")?;
    let mut index_of: HashMap<String, u32> = HashMap::new();
    let mut afters: Vec<Vec<String>> = Vec::new();
    let mut groups: Vec<ExportedGroup> = Vec::new();
    let total = first_page.total;
    let mut ops = std::mem::take(&mut first_page.ops);
    // The plan page of the same ops: their args, as JSON.
    let mut plan = first_plan;
    let mut next = 0u32;
    loop {
        let got = ops.len() as u32;
        let page_start = next;
        for op in ops {
            let index = next;
            next += 1;
            if index > 0 {
                out.write_all(b",\n")?;
            }
            let op_args = plan
                .as_ref()
                .and_then(|plan| plan.args_json.get((index - page_start) as usize))
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or(Value::Null);
            serde_json::to_writer(&mut *out, &exported_op(index, &op, op_args))?;
            if !op.group.is_empty() {
                match groups.last_mut() {
                    Some(run) if run.end == index && run.id == op.group => run.end += 1,
                    _ => groups.push(ExportedGroup {
                        id: op.group.clone(),
                        start: index,
                        end: index + 1,
                    }),
                }
            }
            index_of.insert(op.id, index);
            afters.push(op.after);
        }
        if got < EXPORT_PAGE_OPS || next >= total {
            break;
        }
        ops = client
            .status_page(batch_id, next, EXPORT_PAGE_OPS)
            .await?
            .ops;
        if plan.is_some() {
            plan = plan_page(client, batch_id, next).await?;
        }
    }

    // Events, from the first, until the batch finished or the stream has
    // caught up with a running batch.
    out.write_all(b"\n],\n\"events\":[\n")?;
    let mut events = client.watch(batch_id, 0).await?;
    let mut first = true;
    loop {
        let event = match tokio::time::timeout(args.events_idle, events.next()).await {
            Ok(Some(event)) => event?,
            Ok(None) | Err(_) => break,
        };
        if !first {
            out.write_all(b",\n")?;
        }
        first = false;
        let finished = event.kind() == v1::EventKind::BatchFinished;
        serde_json::to_writer(&mut *out, &exported_event(&event))?;
        if finished {
            break;
        }
    }

    out.write_all(b"\n],\n\"memory\":")?;
    write_memory(client, batch_id, namespace.as_deref(), args, out).await?;

    let deps: Vec<Vec<u32>> = afters
        .iter()
        .map(|after| {
            after
                .iter()
                .filter_map(|id| index_of.get(id).copied())
                .collect()
        })
        .collect();
    let graph = ExportedGraph {
        deps,
        groups,
        namespace,
    };
    out.write_all(b",\n\"graph\":")?;
    serde_json::to_writer(&mut *out, &graph)?;
    out.write_all(b"}\n")?;
    Ok(())
}

/// The batch's header, field for field as `/api/batches/{id}` answers.
fn header(status: &v1::BatchStatus, tenant: &str, namespace: Option<&str>) -> Value {
    let ended = status.succeeded + status.failed + status.skipped + status.cancelled;
    json!({
        "id": status.batch_id,
        "name": status.name,
        "tenant": tenant,
        "state": words::batch_state(status.state()),
        "error": status.error,
        "created_at_ms": status.created_at_ms,
        "wall_ms": status.wall_ms,
        "sequential_ms": status.sequential_ms,
        "speedup": (status.speedup.is_finite() && status.speedup > 0.0).then_some(status.speedup),
        "total": status.total,
        "succeeded": status.succeeded,
        "failed": status.failed,
        "skipped": status.skipped,
        "cancelled": status.cancelled,
        "running": status.running,
        "waiting": status.total.saturating_sub(ended + status.running),
        "critical_path": status.critical_path,
        "critical_path_ms": status.critical_path_ms,
        "namespace": namespace,
        "owner": status.owner,
        "last_seq": Value::Null,
    })
}

fn exported_op(index: u32, op: &v1::OpStatus, args: Value) -> ExportedOp {
    let OpStreams {
        stdout: output,
        stderr,
        stderr_truncated,
    } = streams(op);
    ExportedOp {
        index,
        id: op.id.clone(),
        kind: op.kind.clone(),
        group: (!op.group.is_empty()).then(|| op.group.clone()),
        state: words::op_state(op.state()).to_owned(),
        attempts: op.attempts,
        max_attempts: None,
        worker: op.worker.clone(),
        started_ms: op.started_ms,
        duration_ms: op.duration_ms,
        output,
        stderr,
        stderr_truncated,
        error: op.error.clone(),
        after: op.after.clone(),
        args,
    }
}

fn exported_event(event: &v1::BatchEvent) -> ExportedEvent {
    ExportedEvent {
        seq: event.seq,
        at_ms: event.at_ms,
        kind: words::event_kind(event.kind()).to_owned(),
        op_id: event.op_id.clone(),
        attempt: event.attempt,
        worker: event.worker.clone(),
        message: event.message.clone(),
        batch_state: (event.kind() == v1::EventKind::BatchFinished)
            .then(|| words::batch_state(event.batch_state()).to_owned()),
    }
}

/// The batch's memory keys, values up to `--max-value-bytes`: its own, or
/// its shared namespace's (the batch's scope resolves to it; the file names
/// the namespace as the scope).
async fn write_memory(
    client: &Client,
    batch_id: &str,
    namespace: Option<&str>,
    args: &ExportArgs,
    out: &mut impl Write,
) -> Result<(), Failed> {
    let memory = client.memory(Scope::Batch(batch_id.to_owned()));
    write!(
        out,
        "{{\"scope\":{},\"keys\":[",
        json!(namespace.unwrap_or("batch"))
    )?;
    let mut page_token = String::new();
    let mut written = 0usize;
    let mut truncated = false;
    'pages: loop {
        let page = memory.list("", &page_token, MEMORY_PAGE_KEYS).await?;
        for info in page.keys {
            if written >= args.max_keys {
                truncated = true;
                break 'pages;
            }
            let mut key = ExportedKey {
                key: info.key.clone(),
                version: info.version,
                bytes: info.size,
                content_type: info.content_type.clone(),
                expires_at_ms: info.expires_at_ms,
                value: None,
                value_hex: None,
                value_omitted: true,
            };
            if info.size <= args.max_value_bytes
                && let Some(entry) = memory.get(&info.key).await?
                && entry.value.len() as u64 <= args.max_value_bytes
            {
                key.value_omitted = false;
                match String::from_utf8(entry.value) {
                    Ok(text) => key.value = Some(text),
                    Err(bytes) => key.value_hex = Some(hex_encode(bytes.as_bytes())),
                }
            }
            if written > 0 {
                out.write_all(b",")?;
            }
            out.write_all(b"\n")?;
            serde_json::to_writer(&mut *out, &key)?;
            written += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    write!(out, "\n],\"truncated\":{truncated}}}")?;
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
