//! The JSON API the pages read (docs/dashboard-api.md): thin handlers over
//! the coordinator's domain calls, each through the caller's principal, so
//! the dashboard sees exactly what the gRPC API would show that token.
//! Answers are paged or aggregated here, never one document of a whole
//! large batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use volley_coordinator::CoordinatorError;
use volley_coordinator::auth::{AuthError, Principal, Role};
use volley_coordinator::domain::{BatchState, OpState};
use volley_coordinator::views::{self, BatchView};
use volley_proto::BatchId;
use volley_proto::streams::{OpStreams, streams_of};

use crate::App;
use crate::export::Export;
use crate::graph::{self, GraphOp};
use crate::session::{Caller, check_csrf};
use crate::source::{BatchRows, Files, Source, View};

/// What an API call can fail with, as an HTTP status and
/// `{"error": …, "message": …}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooLarge(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, word) = self.parts();
        (
            status,
            Json(json!({"error": word, "message": self.to_string()})),
        )
            .into_response()
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> ApiError {
        let message = error.to_string();
        match error {
            CoordinatorError::BatchNotFound(_) | CoordinatorError::OpNotFound { .. } => {
                ApiError::NotFound(message)
            }
            CoordinatorError::Invalid(_) | CoordinatorError::BadRequest(_) => {
                ApiError::Invalid(message)
            }
            CoordinatorError::Auth(AuthError::Unauthenticated(_)) => {
                ApiError::Unauthenticated(message)
            }
            CoordinatorError::Auth(AuthError::PermissionDenied(_)) => ApiError::Forbidden(message),
            _ => ApiError::Unavailable(message),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// An op id the coordinator refuses to look up (too long to be one) names
/// no op: `404`, as an unknown one is.
fn op_not_found(error: CoordinatorError) -> ApiError {
    match error {
        CoordinatorError::BadRequest(message) => ApiError::NotFound(message),
        other => other.into(),
    }
}

/// A path's parameters; one that does not decode (`%FF`) names nothing
/// here: `404` JSON, like any unknown id.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::NotFound(rejection.body_text()))
    }
}

/// A query string; one that does not parse is `400` JSON (`invalid`), as
/// every other API error is JSON.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::Invalid(rejection.body_text()))
    }
}

/// A count in a query (`limit`, `offset`): digits, and a number too big
/// for this machine is the biggest there is (then clamped), not an error.
#[derive(Clone, Copy, Debug)]
pub struct Count(usize);

impl Count {
    fn or(count: Option<Count>, default: usize) -> usize {
        count.map_or(default, |Count(value)| value)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digits = text.trim();
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(serde::de::Error::custom(format!(
                "`{}` is not a count",
                digits.chars().take(32).collect::<String>().escape_debug()
            )));
        }
        Ok(Count(digits.parse().unwrap_or(usize::MAX)))
    }
}

pub(crate) async fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match &app.source {
        Source::Live(coordinator) => app.sessions.caller(coordinator, headers).await,
        Source::File(_) => Ok(file_caller()),
    }
}

/// Whoever reads exported files: they are on this machine and hold the
/// files already, so no login; they may change nothing in a batch.
fn file_caller() -> Caller {
    Caller {
        principal: Arc::new(Principal {
            token_id: "file".to_owned(),
            role: Role::Client,
            ..Principal::anonymous()
        }),
        csrf: None,
        authenticated: false,
    }
}

/// The open export of the batch `id` names, or not found.
fn exported(files: &Files, id: &str) -> Result<Arc<Export>, ApiError> {
    let batch = batch_id(id)?;
    files.find(batch.as_str()).ok_or_else(|| {
        let open: Vec<String> = files
            .all()
            .iter()
            .map(|export| export.batch_id().to_owned())
            .collect();
        ApiError::NotFound(format!(
            "batch {batch} is not in the open files (they hold {})",
            if open.is_empty() {
                "none yet: drop an export on the page".to_owned()
            } else {
                open.join(", ")
            }
        ))
    })
}

/// A batch id from a path: at most 64 characters of an id's alphabet.
fn batch_id(raw: &str) -> Result<BatchId, ApiError> {
    if raw.is_empty()
        || raw.len() > 64
        || !raw
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    {
        return Err(ApiError::NotFound(format!(
            "no batch `{}`",
            raw.chars().take(64).collect::<String>().escape_debug()
        )));
    }
    Ok(BatchId::new(raw))
}

pub async fn session(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    Ok(Json(json!({
        "auth": caller.authenticated,
        "tenant": caller.principal.tenant,
        "role": format!("{:?}", caller.principal.role).to_lowercase(),
        // A file dashboard's token is the one a drop must send.
        "csrf": match &app.source {
            Source::File(files) => files.open_token.clone(),
            Source::Live(_) => caller.csrf.clone().unwrap_or_default(),
        },
        "mode": if app.source.is_file() { "file" } else { "live" },
        "max_file_bytes": match &app.source {
            Source::File(files) => Some(files.max_bytes),
            Source::Live(_) => None,
        },
        "can_cancel": !app.source.is_file() && caller.may_change(),
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<Count>,
}

pub async fn batches(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let limit = Count::or(query.limit, 50).clamp(1, 500) as u32;
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(files) => {
            let rows: Vec<Value> = files
                .all()
                .iter()
                .map(|export| file_batch(export))
                .collect();
            return Ok(Json(json!({"batches": rows, "next": Value::Null})).into_response());
        }
    };
    let batches = coordinator.list(limit, &caller.principal).await?;
    let now = now_ms();
    let rows: Vec<Value> = batches
        .iter()
        .map(|batch| {
            let end = batch.finished_ms.unwrap_or(now);
            let wall_ms = end.saturating_sub(batch.created_ms);
            json!({
                "id": batch.batch.to_string(),
                "name": batch.name,
                "tenant": batch.tenant,
                "state": batch.state.word(),
                "done": batch.done,
                "total": batch.total,
                "created_at_ms": batch.created_ms,
                "finished_at_ms": batch.finished_ms.unwrap_or(0),
                "wall_ms": wall_ms,
                "sequential_ms": batch.sequential_ms,
                "speedup": speedup(batch.sequential_ms, wall_ms),
            })
        })
        .collect();
    Ok(Json(json!({"batches": rows, "next": Value::Null})).into_response())
}

/// The list's row of an exported batch.
fn file_batch(export: &Export) -> Value {
    let header = &export.header;
    let field = |name: &str| header.get(name).cloned().unwrap_or(Value::Null);
    let done = ["succeeded", "failed", "skipped", "cancelled"]
        .iter()
        .filter_map(|name| header.get(*name).and_then(Value::as_u64))
        .sum::<u64>();
    let wall = header.get("wall_ms").and_then(Value::as_u64).unwrap_or(0);
    let finished = if field("state") == "running" {
        0
    } else {
        export.created_ms + wall
    };
    json!({
        "id": export.batch_id,
        "name": field("name"),
        "tenant": export.tenant,
        "state": field("state"),
        "done": done,
        "total": field("total"),
        "created_at_ms": export.created_ms,
        "finished_at_ms": finished,
        "wall_ms": wall,
        "sequential_ms": field("sequential_ms"),
        "speedup": field("speedup"),
    })
}

pub async fn batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(export) => {
            return Ok(Json(&exported(export, &id)?.header).into_response());
        }
    };
    let batch = batch_id(&id)?;
    // The seq is read before the batch: the header shows every event up to
    // it, and the page follows the stream after it. (The rows may be a
    // reuse up to RUNNING_ROWS_TTL old; the next event refreshes them.)
    let (view, last_seq) = coordinator
        .batch_view_and_seq(&batch, &caller.principal)
        .await?;
    // The same rows the graph and the timeline of this page load read (one
    // store read), and their critical path computed once for all three.
    let rows = app.rows.rows(coordinator, &view).await?;
    let owner = coordinator.batch_owner_of(&view).await?;
    let meta = view.meta();
    let plan = view.plan();
    let summary = rows.summary(plan);
    let wall_ms = meta
        .finished_ms
        .unwrap_or_else(now_ms)
        .saturating_sub(meta.created_ms);
    let critical_path: Vec<&str> = summary
        .critical_path
        .iter()
        .map(|index| plan.ops[*index as usize].id.as_str())
        .collect();
    Ok(Json(json!({
        "id": meta.id.as_str(),
        "name": meta.name,
        "tenant": view.tenant(),
        "state": meta.state.word(),
        "error": meta.error,
        "created_at_ms": meta.created_ms,
        "wall_ms": wall_ms,
        "sequential_ms": summary.sequential_ms,
        "speedup": speedup(summary.sequential_ms, wall_ms),
        "total": meta.total,
        "succeeded": meta.succeeded,
        "failed": meta.failed,
        "skipped": meta.skipped,
        "cancelled": meta.cancelled,
        "running": meta.running,
        "waiting": meta.total.saturating_sub(meta.done() + meta.running),
        "critical_path": critical_path,
        "critical_path_ms": summary.critical_path_ms,
        "namespace": plan.namespace,
        "owner": owner,
        "last_seq": last_seq,
    }))
    .into_response())
}

/// Sequential time over wall time; none before any time passed or any op
/// took time.
fn speedup(sequential_ms: u64, wall_ms: u64) -> Option<f64> {
    (wall_ms > 0 && sequential_ms > 0).then(|| sequential_ms as f64 / wall_ms as f64)
}

async fn view_and_rows(
    app: &App,
    caller: &Caller,
    id: &str,
) -> Result<(View, Arc<BatchRows>), ApiError> {
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(export) => {
            let export = exported(export, id)?;
            let rows = Arc::clone(&export.rows);
            return Ok((View::File(export), rows));
        }
    };
    let batch = batch_id(id)?;
    let view = coordinator.batch_view(&batch, &caller.principal).await?;
    let rows = app.rows.rows(coordinator, &view).await?;
    Ok((View::Live(view), rows))
}

/// How long a running batch's rows are reused: one page load's header,
/// graph, ops and timeline calls (issued together) read the store once.
const RUNNING_ROWS_TTL: Duration = Duration::from_millis(500);
/// How long a finished batch's rows are reused: they no longer change.
const FINISHED_ROWS_TTL: Duration = Duration::from_secs(60);
/// At most this many batches' rows are kept …
const CACHED_BATCHES: usize = 16;
/// … and at most this many rows in all (about 100 bytes each, so tens of
/// megabytes); a batch larger than that is read every time.
const CACHED_ROWS: usize = 400_000;

/// The rows of recently viewed batches, shared by the handlers: a short
/// reuse so that one page load (and several viewers polling one batch)
/// costs one store read, not one per panel. Only rows are kept: every call
/// still reads its `BatchView` through the caller's principal, so the cache
/// never answers a caller who may not read the batch.
#[derive(Default)]
pub struct RowsCache {
    entries: std::sync::Mutex<HashMap<BatchId, Arc<CachedRows>>>,
}

struct CachedRows {
    /// When the read began (its age is judged from then).
    read_at: Instant,
    /// The ops of the view it was read for: a batch that grew is read again.
    ops: usize,
    finished: bool,
    /// Filled by the first caller; the others wait for it (one read each
    /// time the rows go stale, however many panels ask at once).
    rows: tokio::sync::OnceCell<Arc<BatchRows>>,
}

impl CachedRows {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = if self.finished {
            FINISHED_ROWS_TTL
        } else {
            RUNNING_ROWS_TTL
        };
        now.saturating_duration_since(self.read_at) < ttl
    }
}

impl RowsCache {
    /// The rows of `view`, reused while fresh.
    async fn rows(
        &self,
        coordinator: &volley_coordinator::Coordinator,
        view: &BatchView,
    ) -> Result<Arc<BatchRows>, ApiError> {
        let ops = view.plan().ops.len();
        if ops > CACHED_ROWS {
            return Ok(Arc::new(BatchRows::new(coordinator.op_rows(view).await?)));
        }
        let entry = self.entry(view, ops);
        // A failed read leaves the cell empty: the next caller tries again.
        let rows = entry
            .rows
            .get_or_try_init(|| async {
                coordinator
                    .op_rows(view)
                    .await
                    .map(|rows| Arc::new(BatchRows::new(rows)))
            })
            .await?;
        Ok(Arc::clone(rows))
    }

    /// The fresh entry for `view`, or a new empty one in its place.
    fn entry(&self, view: &BatchView, ops: usize) -> Arc<CachedRows> {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = entries.get(view.id())
            && entry.ops == ops
            && entry.finished == view.finished()
            && entry.fresh(now)
        {
            return Arc::clone(entry);
        }
        entries.retain(|_, entry| entry.fresh(now));
        entries.remove(view.id());
        // Oldest first out, until the new entry fits both bounds.
        while entries.len() >= CACHED_BATCHES
            || entries.values().map(|entry| entry.ops).sum::<usize>() + ops > CACHED_ROWS
        {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, entry)| entry.read_at)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
        let entry = Arc::new(CachedRows {
            read_at: now,
            ops,
            finished: view.finished(),
            rows: tokio::sync::OnceCell::new(),
        });
        entries.insert(view.id().clone(), Arc::clone(&entry));
        entry
    }

    /// Forgets a batch's rows (after a change made here, e.g. a cancel, so
    /// the next read shows it).
    fn forget(&self, batch: &BatchId) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(batch);
    }
}

#[derive(Deserialize)]
pub struct GraphQuery {
    expand: Option<String>,
}

pub async fn graph(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<GraphQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let (view, rows) = view_and_rows(&app, &caller, &id).await?;
    let plan = view.plan();
    let expand: HashSet<String> = query
        .expand
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|key| !key.is_empty())
        .take(50)
        .map(str::to_owned)
        .collect();
    let critical = &rows.summary(plan).critical_path;
    let fold = || {
        let ops: Vec<GraphOp<'_>> = plan
            .ops
            .iter()
            .enumerate()
            .map(|(index, op)| GraphOp {
                id: op.id.as_str(),
                kind: &op.kind,
                group: plan.group_of(index as u32),
                deps: &op.deps,
                dependents: &op.dependents,
                state: rows.get(index).map_or("waiting", |row| row.state),
            })
            .collect();
        graph::aggregate(&ops, &expand, critical)
    };
    if !expand.is_empty() {
        return Ok(Json(fold()).into_response());
    }
    // What every page load asks: folded once per read of the rows.
    let folded = rows.folded(|| serde_json::to_vec(&fold()).unwrap_or_default());
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        folded.to_vec(),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct OpsQuery {
    offset: Option<Count>,
    limit: Option<Count>,
    state: Option<String>,
    q: Option<String>,
    group: Option<String>,
}

pub async fn ops(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<OpsQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let (view, rows) = view_and_rows(&app, &caller, &id).await?;
    let plan = view.plan();
    let offset = Count::or(query.offset, 0);
    let limit = Count::or(query.limit, 200).clamp(1, 1000);
    let needle = query.q.as_deref().unwrap_or_default();
    let matching = plan
        .ops
        .iter()
        .zip(rows.iter())
        .enumerate()
        .filter(|(index, (op, row))| {
            query
                .state
                .as_deref()
                .is_none_or(|state| state.is_empty() || row.state == state)
                && (needle.is_empty() || op.id.as_str().contains(needle))
                && query.group.as_deref().is_none_or(|group| {
                    group.is_empty() || plan.group_of(*index as u32) == Some(group)
                })
        });
    let mut total = 0usize;
    let mut page = Vec::new();
    for (index, (op, row)) in matching {
        if total >= offset && page.len() < limit {
            page.push(json!({
                "index": index,
                "id": op.id.as_str(),
                "kind": op.kind,
                "group": plan.group_of(index as u32),
                "state": row.state,
                "attempts": row.attempts,
                "worker": row.worker,
                "started_ms": row.started_ms,
                "duration_ms": row.duration_ms,
                "error": row.error,
            }));
        }
        total += 1;
    }
    Ok(Json(json!({"total": total, "offset": offset, "ops": page})).into_response())
}

/// Bytes of an op's output and stderr an op panel shows.
const PANEL_TEXT: usize = 4096;

/// What an op panel shows, from either source.
struct OpPanel {
    index: u32,
    id: String,
    kind: String,
    group: Option<String>,
    state: &'static str,
    args: Value,
    after: Vec<String>,
    attempts: u32,
    max_attempts: Option<u32>,
    worker: String,
    started_ms: u64,
    duration_ms: u64,
    stdout: String,
    stderr: String,
    stderr_truncated: bool,
    error: String,
    events: Vec<Value>,
    why: Option<Value>,
}

pub async fn op(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath((id, op_id)): ApiPath<(String, String)>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let panel = match &app.source {
        Source::Live(coordinator) => live_op(coordinator, &caller, &id, &op_id).await?,
        Source::File(export) => file_op(exported(export, &id)?.as_ref(), &op_id)?,
    };
    Ok(Json(json!({
        "index": panel.index,
        "id": panel.id,
        "kind": panel.kind,
        "group": panel.group,
        "state": panel.state,
        "args": panel.args,
        "after": panel.after,
        "attempts": panel.attempts,
        "max_attempts": panel.max_attempts,
        "worker": panel.worker,
        "started_ms": panel.started_ms,
        "duration_ms": panel.duration_ms,
        "output": head(&panel.stdout, PANEL_TEXT),
        "output_bytes": panel.stdout.len(),
        "stderr": head(&panel.stderr, PANEL_TEXT),
        "stderr_bytes": panel.stderr.len(),
        "stderr_truncated": panel.stderr_truncated,
        "error": panel.error,
        "events": panel.events,
        "why": panel.why,
    }))
    .into_response())
}

async fn live_op(
    coordinator: &volley_coordinator::Coordinator,
    caller: &Caller,
    id: &str,
    op_id: &str,
) -> Result<OpPanel, ApiError> {
    let batch = batch_id(id)?;
    let status = coordinator
        .op_status(&batch, op_id, &caller.principal)
        .await
        .map_err(op_not_found)?;
    let Some(op) = status.ops.first() else {
        return Err(ApiError::NotFound(format!(
            "batch {batch} has no op `{op_id}`"
        )));
    };
    let view = coordinator.batch_view(&batch, &caller.principal).await?;
    let index = view
        .index_of(&op.id)
        .ok_or_else(|| ApiError::NotFound(format!("batch {batch} has no op `{op_id}`")))?;
    let planned = &view.plan().ops[index as usize];
    let events = coordinator.op_events(&view, index, 50, 20_000).await?;
    let why = match op.state {
        OpState::Waiting | OpState::Ready => {
            let answer = coordinator.why(&batch, &op.id, &caller.principal).await?;
            Some(json!({"reasons": answer.reasons}))
        }
        _ => None,
    };
    let OpStreams {
        stdout,
        stderr,
        stderr_truncated,
    } = streams_of(&op.output, &op.details_json);
    Ok(OpPanel {
        index,
        id: op.id.clone(),
        kind: op.kind.clone(),
        group: op.group.clone(),
        state: op.state.word(),
        args: mask(&planned.args, 0),
        after: op.after.clone(),
        attempts: op.attempts,
        max_attempts: Some(planned.max_attempts),
        worker: op.worker.clone(),
        started_ms: op.started_ms,
        duration_ms: op.duration_ms,
        stdout,
        stderr,
        stderr_truncated,
        error: op.error.clone(),
        events: events
            .iter()
            .map(|event| {
                json!({
                    "seq": event.seq,
                    "at_ms": event.at_ms,
                    "kind": event.kind,
                    "attempt": event.attempt,
                    "worker": event.worker,
                    "message": event.message,
                })
            })
            .collect(),
        why,
    })
}

/// An exported op's panel: its args were masked when it was exported.
fn file_op(export: &Export, op_id: &str) -> Result<OpPanel, ApiError> {
    let index = export.index_of(op_id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "batch {} has no op `{}`",
            export.batch_id(),
            op_id.chars().take(200).collect::<String>()
        ))
    })?;
    let op = &export.ops[index as usize];
    let events = export
        .events
        .iter()
        .filter(|event| event.op_id == op.id)
        .take(50)
        .map(|event| {
            json!({
                "seq": event.seq,
                "at_ms": event.at_ms,
                "kind": event.kind,
                "attempt": event.attempt,
                "worker": event.worker,
                "message": event.message,
            })
        })
        .collect();
    let state = export.rows[index as usize].state;
    let why = matches!(state, "waiting" | "ready").then(|| {
        json!({"reasons": ["this is an exported batch: it was not running when it was exported, and will not run"]})
    });
    Ok(OpPanel {
        index,
        id: op.id.clone(),
        kind: op.kind.clone(),
        group: op.group.clone().filter(|group| !group.is_empty()),
        state,
        // Masked when exported; masked again here (it changes nothing then),
        // since a file may have been written by anything.
        args: mask(&op.args, 0),
        after: op.after.clone(),
        attempts: op.attempts,
        max_attempts: op.max_attempts,
        worker: op.worker.clone(),
        started_ms: op.started_ms,
        duration_ms: op.duration_ms,
        stdout: op.output.clone(),
        stderr: op.stderr.clone(),
        stderr_truncated: op.stderr_truncated,
        error: op.error.clone(),
        events,
        why,
    })
}

#[derive(Deserialize)]
pub struct LogsQuery {
    stream: Option<String>,
}

pub async fn op_logs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath((id, op_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let (stdout, stderr) = match &app.source {
        Source::Live(coordinator) => {
            let batch = batch_id(&id)?;
            let status = coordinator
                .op_status(&batch, &op_id, &caller.principal)
                .await
                .map_err(op_not_found)?;
            let Some(op) = status.ops.first() else {
                return Err(ApiError::NotFound(format!(
                    "batch {batch} has no op `{op_id}`"
                )));
            };
            let streams = streams_of(&op.output, &op.details_json);
            (streams.stdout, streams.stderr)
        }
        Source::File(export) => {
            let panel = file_op(exported(export, &id)?.as_ref(), &op_id)?;
            (panel.stdout, panel.stderr)
        }
    };
    let text = match query.stream.as_deref() {
        Some("stderr") => stderr,
        _ => stdout,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct TimelineQuery {
    offset: Option<Count>,
    limit: Option<Count>,
}

pub async fn timeline(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let (view, rows) = view_and_rows(&app, &caller, &id).await?;
    let plan = view.plan();
    let critical = &rows.summary(plan).critical;
    // Started ops, in start order (stable: by index among equal starts).
    let mut started: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| row.started_ms > 0 || row.duration_ms > 0)
        .map(|(index, _)| index)
        .collect();
    started.sort_by_key(|index| (rows[*index].started_ms, *index));
    let mut workers: Vec<&str> = rows
        .iter()
        .filter(|row| !row.worker.is_empty())
        .map(|row| row.worker.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    workers.sort_unstable();
    let worker_at: BTreeMap<&str, usize> = workers
        .iter()
        .enumerate()
        .map(|(at, worker)| (*worker, at))
        .collect();
    let offset = Count::or(query.offset, 0);
    let limit = Count::or(query.limit, 10_000).clamp(1, 20_000);
    let now = view.now_ms();
    let created = view.created_ms();
    let spans: Vec<Value> = started
        .iter()
        .skip(offset)
        .take(limit)
        .map(|index| {
            let row = &rows[*index];
            // A running op's span is the time so far.
            let duration = if row.state == "running" {
                now.saturating_sub(created).saturating_sub(row.started_ms)
            } else {
                row.duration_ms
            };
            json!([
                index,
                plan.ops[*index].id.as_str(),
                worker_at.get(row.worker.as_str()).copied(),
                row.started_ms,
                duration,
                row.state,
                critical.contains(&(*index as u32)),
            ])
        })
        .collect();
    // Saturating: `offset` comes from the caller and may be usize::MAX.
    let end = offset.saturating_add(spans.len());
    let next = (end < started.len()).then_some(end);
    let wall = rows
        .iter()
        .map(|row| row.started_ms + row.duration_ms)
        .max()
        .unwrap_or(0);
    Ok(Json(json!({
        "workers": workers,
        "total": started.len(),
        "next": next,
        "wall_ms": wall,
        "spans": spans,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<String>,
}

pub async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let batch = batch_id(&id)?;
    // The browser's reconnect sends Last-Event-ID to the first URL: it wins.
    let after = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or(query.after.as_deref())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(export) => {
            // The file's events after `after`, then the end: an exported
            // batch changes no more.
            let export = exported(export, &id)?;
            let events: Vec<Result<Event, Infallible>> = export
                .events
                .iter()
                .filter(|event| event.seq > after)
                .map(|event| {
                    let data = json!({
                        "seq": event.seq,
                        "at_ms": event.at_ms,
                        "kind": event.kind,
                        "op_id": event.op_id,
                        "attempt": event.attempt,
                        "worker": event.worker,
                        "message": event.message,
                        "batch_state": event.batch_state,
                    });
                    Ok(Event::default()
                        .id(event.seq.to_string())
                        .event("batch")
                        .data(data.to_string()))
                })
                .collect();
            return Ok(Sse::new(futures::stream::iter(events)).into_response());
        }
    };
    let receiver = coordinator.watch(batch, after, &caller.principal).await?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| async move {
            let event = item.ok()?;
            let data = json!({
                "seq": event.seq,
                "at_ms": event.at_ms,
                "kind": event.kind.word(),
                "op_id": event.op_id.unwrap_or_default(),
                "attempt": event.attempt,
                "worker": event.worker,
                "message": event.message,
                "batch_state": event.batch_state.map(BatchState::word),
            });
            Some(Ok::<Event, Infallible>(
                Event::default()
                    .id(event.seq.to_string())
                    .event("batch")
                    .data(data.to_string()),
            ))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Keys a memory page lists, and how many of them get a preview.
const MEMORY_KEYS: u32 = 1000;
const MEMORY_PREVIEWS: usize = 100;

pub async fn batch_memory(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let batch = batch_id(&id)?;
    memory(&app, &caller, batch.as_str(), "").await
}

pub async fn namespace_memory(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(namespace): ApiPath<String>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    memory(&app, &caller, "", &namespace).await
}

async fn memory(app: &App, caller: &Caller, batch: &str, namespace: &str) -> ApiResult {
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(files) => return file_memory(files, batch, namespace),
    };
    let scope = coordinator
        .memory_scope(batch, namespace, &caller.principal)
        .await?;
    let (keys, _) = coordinator.memory_list(&scope, "", "", MEMORY_KEYS).await?;
    let mut rows = Vec::with_capacity(keys.len());
    for (at, info) in keys.iter().enumerate() {
        let preview = if at < MEMORY_PREVIEWS {
            coordinator
                .memory_get(&scope, &info.key)
                .await?
                .map(|value| head(&String::from_utf8_lossy(&value.value), 200))
        } else {
            None
        };
        rows.push(json!({
            "key": info.key,
            "version": info.version,
            "bytes": info.size,
            "content_type": info.content_type,
            "expires_at_ms": info.expires_at_ms,
            "preview": preview,
        }));
    }
    Ok(Json(json!({
        "scope": if namespace.is_empty() { "batch".to_owned() } else { namespace.to_owned() },
        "keys": rows,
    }))
    .into_response())
}

/// The memory a file holds: its batch's keys as they were exported (a
/// shared namespace's too, when the batch used one).
fn file_memory(files: &Files, batch: &str, namespace: &str) -> ApiResult {
    let found = files.all().into_iter().find(|export| {
        if namespace.is_empty() {
            export.is(batch)
        } else {
            export.memory.scope == namespace
        }
    });
    let Some(export) = found else {
        return Err(ApiError::NotFound(
            "the open files hold no such memory".to_owned(),
        ));
    };
    let memory = &export.memory;
    let rows: Vec<Value> = memory
        .keys
        .iter()
        .take(MEMORY_KEYS as usize)
        .enumerate()
        .map(|(at, info)| {
            let preview = if at < MEMORY_PREVIEWS {
                info.value.as_deref().map(|value| head(value, 200))
            } else {
                None
            };
            json!({
                "key": info.key,
                "version": info.version,
                "bytes": info.bytes,
                "content_type": info.content_type,
                "expires_at_ms": info.expires_at_ms,
                "preview": preview,
            })
        })
        .collect();
    Ok(Json(json!({
        "scope": if namespace.is_empty() { "batch".to_owned() } else { namespace.to_owned() },
        "keys": rows,
    }))
    .into_response())
}

pub async fn workers(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    caller(&app, &headers).await?;
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        // An export holds no cluster: no workers.
        Source::File(_) => return Ok(Json(json!({"workers": []})).into_response()),
    };
    let workers = coordinator.workers().await;
    let rows: Vec<Value> = workers
        .iter()
        .map(|worker| {
            json!({
                "id": worker.worker_id,
                "slots": worker.slots,
                "busy": worker.busy,
                "labels": worker.labels,
                "kinds": worker.kinds,
                "draining": worker.draining,
                "coordinator": worker.coordinator,
            })
        })
        .collect();
    Ok(Json(json!({"workers": rows})).into_response())
}

pub async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult {
    let caller = caller(&app, &headers).await?;
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        Source::File(_) => {
            return Err(ApiError::Forbidden(
                "this is an exported batch file: it is read-only".to_owned(),
            ));
        }
    };
    check_csrf(&caller, &headers)?;
    if !caller.may_change() {
        return Err(ApiError::Forbidden(
            "this token may not cancel batches".to_owned(),
        ));
    }
    let batch = batch_id(&id)?;
    let outcome = coordinator.cancel(&batch, &caller.principal).await?;
    app.rows.forget(&batch);
    Ok(Json(json!({"cancelled": true, "ops": outcome.cancelled})).into_response())
}

/// The name a dropped file is sent with (its errors name it).
const FILE_NAME_HEADER: &str = "x-volley-file-name";

/// `POST /api/files` (a file dashboard only): opens an export dropped on
/// the page. The body is the file; it is read up to the dashboard's file
/// limit and checked as hostile input (`Export::from_slice`), so a bad
/// file is a `400` that names the problem and a large one a `413`. Only
/// the dashboard's own page may open one: the request must carry the
/// token of `/api/session` (which a page of another site can neither read
/// nor send without a preflight this server never allows) and, when the
/// browser names an origin, come from this very host.
pub async fn open_file(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    let Source::File(files) = &app.source else {
        return Err(ApiError::NotFound("no such page".to_owned()));
    };
    let sent = headers
        .get("x-volley-csrf")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if sent.is_empty() || sent != files.open_token {
        return Err(ApiError::Forbidden(
            "a file is opened from the dashboard's own page (its X-Volley-Csrf is missing or wrong)"
                .to_owned(),
        ));
    }
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "a file opened from another site".to_owned(),
        ));
    }
    let name: String = headers
        .get(FILE_NAME_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|name| {
            name.chars()
                .filter(|character| !character.is_control())
                .take(200)
                .collect()
        })
        .filter(|name: &String| !name.trim().is_empty())
        .unwrap_or_else(|| "the dropped file".to_owned());
    let limit = usize::try_from(files.max_bytes).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::TooLarge(format!(
            "{name} is larger than the {} bytes a dropped file may have (volley dashboard --max-file-bytes)",
            files.max_bytes
        ))
    })?;
    let checked_name = name.clone();
    let export = tokio::task::spawn_blocking(move || Export::from_slice(&bytes, &checked_name))
        .await
        .map_err(|error| ApiError::Unavailable(format!("reading {name} failed: {error}")))?
        .map_err(|error| ApiError::Invalid(error.to_string()))?;
    let id = export.batch_id().to_owned();
    let ops = export.op_count();
    tracing::info!(batch = %id, ops, file = %name, "opened a dropped export");
    files.open(export);
    Ok(Json(json!({"id": id, "ops": ops, "url": format!("/batches/{id}")})).into_response())
}

/// Whether a request's `Origin`, when it has one, is this very host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    origin.split("://").nth(1) == Some(host)
}

/// The first `max` bytes of `text`, cut at a character boundary.
fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Args as a panel shows them: the coordinator's one masking, the same
/// `volley export` writes.
fn mask(value: &Value, depth: usize) -> Value {
    views::mask_args_at(value, depth)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_credential_fields_are_masked_but_secret_references_stay() {
        let args = json!({
            "cmd": "deploy",
            "env": {"TOKEN": "hunter2", "REF": "${secret.DEPLOY}", "VOLLEY_ITEM": "api"},
            "headers": [{"authorization": "Bearer abc"}],
            "api_key": 12,
            "path": "a.txt",
        });
        assert_eq!(
            mask(&args, 0),
            json!({
                "cmd": "deploy",
                "env": {"TOKEN": "••••••", "REF": "${secret.DEPLOY}", "VOLLEY_ITEM": "api"},
                "headers": [{"authorization": "••••••"}],
                "api_key": "••••••",
                "path": "a.txt",
            })
        );
    }

    #[test]
    fn hostile_batch_ids_are_not_found_not_errors() {
        for hostile in ["", "../../etc/passwd", "a b", &"x".repeat(65), "id\u{0}"] {
            assert!(
                matches!(batch_id(hostile), Err(ApiError::NotFound(_))),
                "{hostile:?}"
            );
        }
        assert!(batch_id("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").is_ok());
    }

    #[test]
    fn counts_clamp_instead_of_overflowing_and_refuse_non_digits() {
        #[derive(Deserialize)]
        struct Counted {
            limit: Option<Count>,
        }
        let parse = |query: &str| {
            let uri: axum::http::Uri = format!("/x?{query}").parse().expect("a uri");
            Query::<Counted>::try_from_uri(&uri).map(|Query(counted)| counted)
        };
        let huge = parse("limit=99999999999999999999999").expect("a count");
        assert_eq!(Count::or(huge.limit, 1), usize::MAX);
        assert_eq!(Count::or(parse("other=1").expect("none").limit, 7), 7);
        for bad in ["limit=-1", "limit=abc", "limit=", "limit=1e3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn head_cuts_at_a_character() {
        assert_eq!(head("héllo", 2), "h");
        assert_eq!(head("abc", 10), "abc");
    }
}
