//! A batch's whole record as one JSON document (`volley export`,
//! format `volley-batch-export/1`, described in docs/dashboard-api.md), and
//! reading one back so the dashboard can show a batch after its cluster or
//! its retention is gone.
//!
//! The writer (the CLI) streams the document element by element with these
//! same types, so the format is spelled once. The reader checks what it
//! reads as hostile input: a size bound before parsing, the format's
//! version first, then every index and count, so a bad file is an error
//! that names the problem, never a panic or a wrong picture.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use volley_coordinator::views::OpRow;
use volley_plan::{GroupRun, HazardPolicy, Plan, PlannedOp};
use volley_proto::OpId;
use volley_proto::words;

/// The `format` of the one version this build writes and reads.
pub const EXPORT_FORMAT: &str = "volley-batch-export/1";

/// The default most bytes of a file `volley dashboard --file` reads.
pub const DEFAULT_MAX_EXPORT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The most ops an exported batch may have (a batch's own limit).
pub const MAX_EXPORT_OPS: usize = 1_000_000;

/// One op, with its whole output and stderr.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportedOp {
    pub index: u32,
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub group: Option<String>,
    /// `waiting`, `running`, `succeeded`, … (the CLI's words).
    pub state: String,
    #[serde(default)]
    pub attempts: u32,
    /// `null` when the cluster does not say.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub worker: String,
    /// Since the batch was created; 0 when it never started.
    #[serde(default)]
    pub started_ms: u64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub stderr_truncated: bool,
    #[serde(default)]
    pub error: String,
    /// The ids of the ops it runs after (its dependencies).
    #[serde(default)]
    pub after: Vec<String>,
    /// The args with secrets masked as the dashboard shows them; `null`
    /// when the cluster does not give them out.
    #[serde(default)]
    pub args: Value,
}

/// One event of the batch's stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportedEvent {
    pub seq: u64,
    pub at_ms: u64,
    /// `op_started`, `batch_finished`, …
    pub kind: String,
    #[serde(default)]
    pub op_id: String,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub worker: String,
    #[serde(default)]
    pub message: String,
    /// On `batch_finished`: the batch's end state.
    #[serde(default)]
    pub batch_state: Option<String>,
}

/// The batch's memory keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportedMemory {
    /// `batch` (its own memory) or the shared namespace's name.
    pub scope: String,
    pub keys: Vec<ExportedKey>,
    /// More keys than the export keeps: the rest are not in the file.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportedKey {
    pub key: String,
    pub version: u64,
    pub bytes: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub expires_at_ms: u64,
    /// The value as text when it is UTF-8 and within the export's bound.
    #[serde(default)]
    pub value: Option<String>,
    /// The value in hex when it is not UTF-8 (within the bound).
    #[serde(default)]
    pub value_hex: Option<String>,
    /// The value was over the bound (or gone) and is not in the file.
    #[serde(default)]
    pub value_omitted: bool,
}

/// Enough of the plan to draw the DAG again.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportedGraph {
    /// By op index: the indices it depends on.
    pub deps: Vec<Vec<u32>>,
    /// Runs of ops expanded from one `foreach:` op.
    #[serde(default)]
    pub groups: Vec<ExportedGroup>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExportedGroup {
    pub id: String,
    pub start: u32,
    pub end: u32,
}

/// The document, as read back.
#[derive(Deserialize)]
struct ExportDocument {
    format: String,
    #[serde(default)]
    exported_at_ms: u64,
    batch: serde_json::Map<String, Value>,
    ops: Vec<ExportedOp>,
    #[serde(default)]
    events: Vec<ExportedEvent>,
    #[serde(default)]
    memory: ExportedMemory,
    graph: ExportedGraph,
}

/// Only the version, read before anything else.
#[derive(Deserialize)]
struct FormatOnly {
    format: Option<Value>,
}

/// Why an export file cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {bytes} bytes, more than the {max} bytes allowed (--max-file-bytes)")]
    TooLarge { path: String, bytes: u64, max: u64 },
    #[error("{path} is not a batch export: {message}")]
    NotJson { path: String, message: String },
    #[error(
        "{path} has format {found}, and this volley reads only `{EXPORT_FORMAT}` (export it again with this version)"
    )]
    WrongVersion { path: String, found: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// An exported batch, checked and ready to serve.
pub struct Export {
    pub(crate) batch_id: String,
    pub(crate) tenant: String,
    pub(crate) created_ms: u64,
    pub(crate) exported_at_ms: u64,
    /// The batch header exactly as `/api/batches/{id}` answered it.
    pub(crate) header: serde_json::Map<String, Value>,
    pub(crate) plan: Plan,
    pub(crate) rows: std::sync::Arc<crate::source::BatchRows>,
    pub(crate) ops: Vec<ExportedOp>,
    pub(crate) events: Vec<ExportedEvent>,
    pub(crate) memory: ExportedMemory,
    index_of: HashMap<String, u32>,
}

impl Export {
    /// Reads and checks `path`; a file over `max_bytes` is refused before
    /// it is read.
    pub fn load(path: &Path, max_bytes: u64) -> Result<Export, ExportError> {
        let shown = path.display().to_string();
        let read_error = |source| ExportError::Read {
            path: shown.clone(),
            source,
        };
        let bytes = std::fs::metadata(path).map_err(read_error)?.len();
        if bytes > max_bytes {
            return Err(ExportError::TooLarge {
                path: shown,
                bytes,
                max: max_bytes,
            });
        }
        let text = std::fs::read(path).map_err(read_error)?;
        Export::from_slice(&text, &shown)
    }

    /// Checks a document already in memory (`name` names it in errors).
    pub fn from_slice(text: &[u8], name: &str) -> Result<Export, ExportError> {
        let not_json = |error: serde_json::Error| ExportError::NotJson {
            path: name.to_owned(),
            message: error.to_string(),
        };
        let format = serde_json::from_slice::<FormatOnly>(text)
            .map_err(not_json)?
            .format;
        match format {
            Some(Value::String(found)) if found == EXPORT_FORMAT => {}
            Some(found) => {
                let mut found = found.to_string();
                found.truncate(80);
                return Err(ExportError::WrongVersion {
                    path: name.to_owned(),
                    found,
                });
            }
            None => {
                return Err(ExportError::NotJson {
                    path: name.to_owned(),
                    message: "it has no `format` field".to_owned(),
                });
            }
        }
        let document: ExportDocument = serde_json::from_slice(text).map_err(not_json)?;
        Export::check(document).map_err(|message| ExportError::Invalid {
            path: name.to_owned(),
            message,
        })
    }

    fn check(document: ExportDocument) -> Result<Export, String> {
        let _ = &document.format;
        let count = document.ops.len();
        if count > MAX_EXPORT_OPS {
            return Err(format!(
                "{count} ops, more than a batch may have ({MAX_EXPORT_OPS})"
            ));
        }
        if document.graph.deps.len() != count {
            return Err(format!(
                "graph.deps has {} entries for {count} ops",
                document.graph.deps.len()
            ));
        }
        let batch_id = document
            .batch
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            })
            .ok_or("batch.id is missing or not a batch id")?
            .to_owned();
        let tenant = document
            .batch
            .get("tenant")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let created_ms = document
            .batch
            .get("created_at_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut index_of = HashMap::with_capacity(count);
        for (at, op) in document.ops.iter().enumerate() {
            if op.index as usize != at {
                return Err(format!("ops[{at}] has index {}", op.index));
            }
            if index_of.insert(op.id.clone(), at as u32).is_some() {
                return Err(format!("ops[{at}]: op id `{}` appears twice", op.id));
            }
            if state_word(&op.state).is_none() {
                return Err(format!("ops[{at}]: unknown state `{}`", op.state));
            }
        }
        let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); count];
        for (at, deps) in document.graph.deps.iter().enumerate() {
            for dep in deps {
                if *dep as usize >= count || *dep as usize == at {
                    return Err(format!("graph.deps[{at}] names op index {dep}"));
                }
                dependents[*dep as usize].push(at as u32);
            }
        }
        if !acyclic(&document.graph.deps, &dependents) {
            return Err("graph.deps has a cycle".to_owned());
        }
        let mut previous_end = 0u32;
        for group in &document.graph.groups {
            if group.start >= group.end || group.end as usize > count || group.start < previous_end
            {
                return Err(format!(
                    "graph.groups: run {}..{} of `{}` is out of order or range",
                    group.start, group.end, group.id
                ));
            }
            previous_end = group.end;
        }
        let ops: Vec<PlannedOp> = document
            .ops
            .iter()
            .zip(document.graph.deps)
            .zip(dependents)
            .map(|((op, mut deps), mut dependents)| {
                deps.sort_unstable();
                deps.dedup();
                dependents.sort_unstable();
                dependents.dedup();
                planned_op(op, deps, dependents)
            })
            .collect();
        let plan = Plan {
            name: document
                .batch
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            max_parallel: 0,
            fail_fast: false,
            hazards: HazardPolicy::Reject,
            ops,
            warnings: Vec::new(),
            namespace: document.graph.namespace,
            deadline_ms: 0,
            retry_failed_sequential: false,
            groups: document
                .graph
                .groups
                .into_iter()
                .map(|group| GroupRun {
                    start: group.start,
                    end: group.end,
                    id: group.id,
                })
                .collect(),
            unwritten_waits: Vec::new(),
        };
        let rows: Vec<OpRow> = document
            .ops
            .iter()
            .map(|op| OpRow {
                state: state_word(&op.state).unwrap_or("waiting"),
                attempts: op.attempts,
                worker: op.worker.clone(),
                started_ms: op.started_ms,
                duration_ms: op.duration_ms,
                error: op.error.lines().next().unwrap_or_default().to_owned(),
            })
            .collect();
        // The header is written before the events: its `last_seq` is the
        // file's last event (a page follows the file's stream after it).
        let mut header = document.batch;
        if header.get("last_seq").is_none_or(Value::is_null) {
            let last = document.events.iter().map(|event| event.seq).max();
            header.insert("last_seq".to_owned(), last.unwrap_or(0).into());
        }
        Ok(Export {
            batch_id,
            tenant,
            created_ms,
            exported_at_ms: document.exported_at_ms,
            header,
            plan,
            rows: std::sync::Arc::new(crate::source::BatchRows::new(rows)),
            ops: document.ops,
            events: document.events,
            memory: document.memory,
            index_of,
        })
    }

    /// The exported batch's id.
    pub fn batch_id(&self) -> &str {
        &self.batch_id
    }

    /// How many ops it has.
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn index_of(&self, op_id: &str) -> Option<u32> {
        self.index_of.get(op_id).copied()
    }

    /// The export's batch, if `id` names it (its whole id).
    pub(crate) fn is(&self, id: &str) -> bool {
        self.batch_id == id
    }
}

fn planned_op(op: &ExportedOp, deps: Vec<u32>, dependents: Vec<u32>) -> PlannedOp {
    PlannedOp {
        id: OpId::new(op.id.clone()),
        kind: op.kind.clone(),
        args: op.args.clone(),
        deps: deps.into_boxed_slice(),
        dependents: dependents.into_boxed_slice(),
        run_if_always: false,
        priority: 2,
        max_attempts: op.max_attempts.unwrap_or(1).max(1),
        retry_policy: None,
        timeout_ms: 0,
        max_output_bytes: 0,
        store_as: None,
        memory_writes: Box::default(),
        wait_for: Box::default(),
        wait_for_any: Box::default(),
        wait_timeout_ms: 0,
        requires: Default::default(),
        wait_writers: Box::default(),
        has_templates: false,
    }
}

/// Kahn's algorithm: whether every op can be ordered.
fn acyclic(deps: &[Vec<u32>], dependents: &[Vec<u32>]) -> bool {
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..deps.len()).filter(|at| waiting[*at] == 0).collect();
    let mut ordered = 0usize;
    while let Some(at) = ready.pop() {
        ordered += 1;
        for next in &dependents[at] {
            let next = *next as usize;
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    ordered == deps.len()
}

/// An op state word as the one `'static` spelling the views use.
pub(crate) fn state_word(word: &str) -> Option<&'static str> {
    words::op_state_named(word).map(words::op_state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> Value {
        json!({
            "format": EXPORT_FORMAT,
            "exported_at_ms": 5,
            "batch": {"id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "name": "n", "tenant": "t", "created_at_ms": 1},
            "ops": [
                {"index": 0, "id": "a", "kind": "noop", "state": "succeeded", "duration_ms": 3},
                {"index": 1, "id": "b", "kind": "noop", "state": "failed", "after": ["a"], "error": "boom\nmore"},
            ],
            "events": [],
            "memory": {"scope": "batch", "keys": []},
            "graph": {"deps": [[], [0]], "groups": [{"id": "g", "start": 1, "end": 2}]},
        })
    }

    fn load(value: &Value) -> Result<Export, ExportError> {
        Export::from_slice(value.to_string().as_bytes(), "batch.json")
    }

    #[test]
    fn a_good_export_becomes_a_plan_and_rows() {
        let export = load(&document()).expect("loads");
        assert_eq!(export.plan.ops[1].deps.as_ref(), &[0]);
        assert_eq!(export.plan.ops[0].dependents.as_ref(), &[1]);
        assert_eq!(export.plan.group_of(1), Some("g"));
        assert_eq!(export.rows[1].error, "boom");
        assert_eq!(export.index_of("b"), Some(1));
    }

    #[test]
    fn hostile_files_are_errors_that_name_the_problem() {
        let wrong_version = {
            let mut value = document();
            value["format"] = json!("volley-batch-export/9");
            value
        };
        let message = load(&wrong_version).err().map(|error| error.to_string());
        assert!(
            message.as_deref().is_some_and(|m| m.contains("export/9")),
            "{message:?}"
        );
        let cycle = {
            let mut value = document();
            value["graph"]["deps"] = json!([[1], [0]]);
            value
        };
        assert!(matches!(load(&cycle), Err(ExportError::Invalid { .. })));
        let out_of_range = {
            let mut value = document();
            value["graph"]["deps"] = json!([[], [7]]);
            value
        };
        assert!(matches!(
            load(&out_of_range),
            Err(ExportError::Invalid { .. })
        ));
        assert!(matches!(
            Export::from_slice(b"{not json", "x"),
            Err(ExportError::NotJson { .. })
        ));
        assert!(matches!(
            Export::from_slice(b"[1,2]", "x"),
            Err(ExportError::NotJson { .. })
        ));
    }
}
