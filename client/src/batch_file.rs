//! Batch files (YAML or JSON, the schema of the proto's `Batch`) read into a
//! `volley.v1.Batch`, with errors that point at the file, line and field, so
//! a typo is fixed before anything is sent.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use volley_proto::v1;

use crate::file_problems;
pub use crate::file_problems::FileProblem;

/// Why a batch file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchFileError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not well-formed YAML or JSON.
    #[error("{source_name}:{line}:{column}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed, but a value does not fit the schema (an unknown field,
    /// a bad priority, duration, …).
    #[error("{source_name}: {}field `{field}`: {message}", op_prefix(op_id))]
    Field {
        source_name: String,
        op_id: Option<String>,
        field: String,
        /// Also in `message`, for a reader that wants it apart.
        line: Option<usize>,
        message: String,
    },
    /// An op's `foreach` could not be expanded (see [`crate::matrix`]).
    #[error("{source_name}: {foreach}")]
    Foreach {
        source_name: String,
        foreach: Box<crate::matrix::ForeachError>,
    },
    /// Well-formed, but not a mapping: no batch file at all.
    #[error("{source_name}: {message}")]
    NotABatch {
        source_name: String,
        message: String,
    },
    /// Fields the schema does not have, every one of them at once.
    #[error("{source_name}: {total} unknown field(s); nothing ran:{}", problem_lines(problems, *total))]
    UnknownFields {
        source_name: String,
        /// The first few (`file_problems::MAX_LISTED`).
        problems: Vec<FileProblem>,
        total: usize,
    },
}

fn problem_lines(problems: &[FileProblem], total: usize) -> String {
    let mut text = String::new();
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&op_prefix(&problem.op_id));
        text.push_str(&format!("field `{}`", problem.field));
        if let Some(line) = problem.line {
            text.push_str(&format!(" (line {line})"));
        }
        text.push_str(": ");
        text.push_str(&problem.message);
    }
    if total > problems.len() {
        text.push_str(&format!(
            "\n  … and {} more not shown",
            total - problems.len()
        ));
    }
    text
}

impl BatchFileError {
    /// The error as a list of problems, one per thing to fix, for a reader
    /// that wants them apart (`--output json`).
    pub fn problems(&self) -> Vec<FileProblem> {
        match self {
            BatchFileError::Io { .. }
            | BatchFileError::NotABatch { .. }
            | BatchFileError::Foreach { .. } => vec![FileProblem {
                op_id: None,
                field: String::new(),
                line: None,
                message: self.to_string(),
            }],
            BatchFileError::Syntax { line, .. } => vec![FileProblem {
                op_id: None,
                field: String::new(),
                line: Some(*line),
                message: self.to_string(),
            }],
            BatchFileError::Field {
                op_id,
                field,
                line,
                message,
                ..
            } => vec![FileProblem {
                op_id: op_id.clone(),
                field: field.clone(),
                line: *line,
                message: message.clone(),
            }],
            BatchFileError::UnknownFields { problems, .. } => problems.clone(),
        }
    }
}

fn op_prefix(op_id: &Option<String>) -> String {
    match op_id {
        Some(op_id) => format!("op `{op_id}`: "),
        None => String::new(),
    }
}

/// The directory a batch file's `foreach` globs resolve under: its own
/// (`.` for a bare file name, whose parent is empty).
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Reads and parses the batch file at `path`.
pub fn read_batch_file(path: &Path) -> Result<v1::Batch, BatchFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| BatchFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = directory_of(path);
    parse_batch_in(&text, &path.display().to_string(), base_dir)
}

/// [`read_batch_file`], with warnings about what is valid but likely not
/// meant (a bare `timeout: 30` is 30 ms).
pub fn read_batch_file_with_warnings(
    path: &Path,
) -> Result<(v1::Batch, Vec<String>), BatchFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| BatchFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = directory_of(path);
    parse_batch_with_warnings_in(&text, &path.display().to_string(), base_dir)
}

thread_local! {
    /// Set while parsing when a duration was a bare number small enough to
    /// be a forgotten unit: only then is the file read again to name them.
    static SMALL_BARE_MILLIS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`parse_batch`], with warnings about what is valid but likely not meant.
pub fn parse_batch_with_warnings(
    text: &str,
    source_name: &str,
) -> Result<(v1::Batch, Vec<String>), BatchFileError> {
    parse_batch_with_warnings_in(text, source_name, Path::new("."))
}

/// [`parse_batch_with_warnings`], with `foreach: {glob: …}` resolved under
/// `base_dir` (the batch file's directory).
fn parse_batch_with_warnings_in(
    text: &str,
    source_name: &str,
    base_dir: &Path,
) -> Result<(v1::Batch, Vec<String>), BatchFileError> {
    SMALL_BARE_MILLIS.with(|flag| flag.set(false));
    let batch = parse_batch_in(text, source_name, base_dir)?;
    let warnings = if SMALL_BARE_MILLIS.with(std::cell::Cell::get) {
        let text = text.trim_start_matches('\u{feff}');
        serde_yaml::from_str::<serde_yaml::Value>(text)
            .map(|document| file_problems::bare_millis_warnings(&document))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok((batch, warnings))
}

/// The problems of the file's shape, every one at once: the typed reader
/// stops at the first. Only read once that reader failed, so a good file
/// is parsed once.
fn shape_error(text: &str, source_name: &str) -> Option<BatchFileError> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    if let Some(message) = file_problems::not_a_batch(&document) {
        return Some(BatchFileError::NotABatch {
            source_name: source_name.to_owned(),
            message,
        });
    }
    let schema = file_problems::Schema {
        batch: file_problems::struct_fields::<BatchFile>(),
        op: file_problems::struct_fields::<OpEntry>(),
        backoff: file_problems::struct_fields::<BackoffEntry>(),
        retry: file_problems::struct_fields::<BatchRetryEntry>(),
    };
    let found = file_problems::unknown_fields(text, &document, &schema);
    (found.total > 0).then(|| BatchFileError::UnknownFields {
        source_name: source_name.to_owned(),
        problems: found.listed,
        total: found.total,
    })
}

/// Parses a batch file's text: JSON when it starts with `{`, YAML otherwise.
/// `source_name` (usually the path) is only used in errors.
pub fn parse_batch(text: &str, source_name: &str) -> Result<v1::Batch, BatchFileError> {
    parse_batch_in(text, source_name, Path::new("."))
}

/// [`parse_batch`], with `foreach: {glob: …}` resolved under `base_dir`.
pub fn parse_batch_in(
    text: &str,
    source_name: &str,
    base_dir: &Path,
) -> Result<v1::Batch, BatchFileError> {
    let text = text.trim_start_matches('\u{feff}');
    let is_json = text.trim_start().starts_with('{');
    let parsed = if is_json {
        serde_json::from_str::<BatchFile>(text).map_err(|error| {
            shape_error(text, source_name).unwrap_or_else(|| json_error(text, source_name, &error))
        })
    } else {
        check_nesting(text, source_name)?;
        serde_yaml::from_str::<BatchFile>(text).map_err(|error| {
            shape_error(text, source_name).unwrap_or_else(|| yaml_error(text, source_name, &error))
        })
    };
    let mut parsed = parsed?;
    let foreach = std::mem::take(&mut parsed.ops.foreach);
    let mut batch = parsed.into_batch();
    crate::matrix::expand(&mut batch.ops, foreach, base_dir, text).map_err(|foreach| {
        BatchFileError::Foreach {
            source_name: source_name.to_owned(),
            foreach: Box::new(foreach),
        }
    })?;
    Ok(batch)
}

/// The deepest nesting a batch file may have: a batch is a few levels deep
/// (batch → ops → op → args → a value), and a JSON reader already stops at
/// 128.
pub const MAX_NESTING: usize = 64;

/// Refuses YAML nested deeper than [`MAX_NESTING`] before parsing it, in
/// one pass over the text: a file of 100,000 `[` (or `- ` on one line) is
/// rejected in milliseconds instead of parsed for a minute. Counts flow
/// collections (`[`, `{` outside quotes and comments) and the block
/// sequence entries that open a line (`- - - x`); indentation cannot nest
/// deeper than the file is long.
fn check_nesting(text: &str, source_name: &str) -> Result<(), BatchFileError> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let too_deep = |line: usize, column: usize| BatchFileError::Syntax {
        source_name: source_name.to_owned(),
        line,
        column,
        message: format!("nested deeper than {MAX_NESTING} levels"),
    };
    let mut state = In::Plain;
    let mut flow_depth: usize = 0;
    for (line_index, line) in text.lines().enumerate() {
        if state == In::Comment {
            state = In::Plain;
        }
        // `- - - x`: each leading `- ` opens a sequence inside the last.
        let trimmed = line.trim_start_matches(' ');
        let entries = trimmed
            .as_bytes()
            .chunks(2)
            .take_while(|pair| *pair == b"- " || *pair == b"-")
            .count();
        if state == In::Plain && flow_depth + entries > MAX_NESTING {
            return Err(too_deep(line_index + 1, line.len() - trimmed.len() + 1));
        }
        let mut previous = ' ';
        let mut characters = line.char_indices().peekable();
        while let Some((column, character)) = characters.next() {
            match state {
                In::Comment => {}
                In::Single => {
                    if character == '\'' {
                        // `''` is an escaped quote inside single quotes.
                        if characters.peek().is_some_and(|(_, next)| *next == '\'') {
                            characters.next();
                        } else {
                            state = In::Plain;
                        }
                    }
                }
                In::Double => match character {
                    '\\' => {
                        characters.next();
                    }
                    '"' => state = In::Plain,
                    _ => {}
                },
                In::Plain => match character {
                    '#' if previous.is_whitespace() => state = In::Comment,
                    '\'' => state = In::Single,
                    '"' => state = In::Double,
                    '[' | '{' => {
                        flow_depth += 1;
                        if flow_depth + entries > MAX_NESTING {
                            return Err(too_deep(line_index + 1, column + 1));
                        }
                    }
                    ']' | '}' => flow_depth = flow_depth.saturating_sub(1),
                    _ => {}
                },
            }
            previous = character;
        }
    }
    Ok(())
}

fn json_error(text: &str, source_name: &str, error: &serde_json::Error) -> BatchFileError {
    let message = strip_location(&error.to_string(), error.line(), error.column());
    if !matches!(error.classify(), serde_json::error::Category::Data) {
        return BatchFileError::Syntax {
            source_name: source_name.to_owned(),
            line: error.line(),
            column: error.column(),
            message,
        };
    }
    // serde_json does not say where in the document a value was wrong;
    // serde_yaml (JSON is YAML) does, so ask it for the path.
    let path = serde_yaml::from_str::<BatchFile>(text)
        .err()
        .map(|yaml_error| split_path(&yaml_error.to_string()).0.to_owned())
        .unwrap_or_default();
    field_error(
        text,
        source_name,
        &path,
        &message,
        Some((error.line(), error.column())),
    )
}

fn yaml_error(text: &str, source_name: &str, error: &serde_yaml::Error) -> BatchFileError {
    let location = error
        .location()
        .map(|location| (location.line(), location.column()));
    let display = error.to_string();
    let message = match location {
        Some((line, column)) => strip_location(&display, line, column),
        None => display,
    };
    // Only a document that is not YAML at all fails to load as a plain value.
    if serde_yaml::from_str::<serde_yaml::Value>(text).is_err() {
        let (line, column) = location.unwrap_or((1, 1));
        return BatchFileError::Syntax {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
        };
    }
    let (path, message) = split_path(&message);
    field_error(text, source_name, path, message, location)
}

/// A schema error at `path` (like `ops[2].timeout`, `ops[0]` or empty for
/// the top level), naming the op by its id when the file gives one.
fn field_error(
    text: &str,
    source_name: &str,
    path: &str,
    message: &str,
    location: Option<(usize, usize)>,
) -> BatchFileError {
    let op_index = path
        .strip_prefix("ops[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(index, _)| index.parse::<usize>().ok());
    // An op without a readable id is named by its position instead.
    let (op_id, position) = match op_index.map(|index| (index, op_id_at(text, index))) {
        Some((_, Some(op_id))) => (Some(op_id), String::new()),
        Some((index, None)) => (None, format!("op #{} (counting from 1): ", index + 1)),
        None => (None, String::new()),
    };
    // `unknown field `x`` and `missing field `x`` name the field in the
    // message; otherwise it is the last part of the path.
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| {
            let rest = message.strip_prefix(prefix)?;
            rest.split_once('`').map(|(name, _)| name.to_owned())
        });
    let field = named.unwrap_or_else(|| {
        let last = path.rsplit('.').next().unwrap_or(path);
        let last = last.split('[').next().unwrap_or(last);
        match (op_index, last) {
            (Some(_), _) if !path.contains('.') => "op",
            (None, "") => "batch",
            _ => last,
        }
        .to_owned()
    });
    let message = match location {
        Some((line, column)) => format!("{position}{message} (line {line}, column {column})"),
        None => format!("{position}{message}"),
    };
    BatchFileError::Field {
        source_name: source_name.to_owned(),
        op_id,
        field,
        line: location.map(|(line, _)| line),
        message,
    }
}

/// The `id` of op `index`, read leniently from the document.
fn op_id_at(text: &str, index: usize) -> Option<String> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    document
        .get("ops")?
        .get(index)?
        .get("id")?
        .as_str()
        .map(str::to_owned)
}

/// Splits serde_yaml's `path: message` (the path is left out at the top).
fn split_path(display: &str) -> (&str, &str) {
    match display.split_once(": ") {
        Some((path, message))
            if !path.is_empty()
                && path
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"_.[]?-".contains(&byte)) =>
        {
            (path, message)
        }
        _ => ("", display),
    }
}

/// Drops the ` at line L column C` the parsers append, which the error
/// carries in its own fields.
fn strip_location(display: &str, line: usize, column: usize) -> String {
    display.replacen(&format!(" at line {line} column {column}"), "", 1)
}

// ------------------------------------------------------------- the schema

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    max_parallel: u32,
    #[serde(default)]
    on_failure: Option<OnFailureName>,
    #[serde(default)]
    hazards: Option<HazardsName>,
    #[serde(default)]
    namespace: String,
    #[serde(default, deserialize_with = "string_map")]
    labels: HashMap<String, String>,
    #[serde(default, deserialize_with = "timeout_ms")]
    wait_timeout: Option<u64>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    allow_unwritten: bool,
    #[serde(default, deserialize_with = "timeout_ms")]
    deadline: Option<u64>,
    #[serde(default)]
    retry_failed: Option<RetryFailedName>,
    /// `retry: {lost_worker: N}`: runs again after a lost worker, per op.
    #[serde(default)]
    retry: Option<BatchRetryEntry>,
    #[serde(default, deserialize_with = "ops_as_protos")]
    ops: crate::matrix::ReadOps,
}

/// A batch's `retry:` block.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRetryEntry {
    /// How many times an op may run again because its worker was lost,
    /// apart from its `attempts` (default 3; 0: none).
    #[serde(default)]
    lost_worker: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpEntry {
    id: String,
    kind: String,
    #[serde(default, deserialize_with = "args_object")]
    args: Option<serde_json::Value>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    run_if: Option<RunIfName>,
    #[serde(default, deserialize_with = "timeout_ms")]
    timeout: Option<u64>,
    #[serde(default, deserialize_with = "byte_size")]
    max_output: Option<u64>,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    priority: Option<PriorityName>,
    #[serde(default)]
    store_as: String,
    #[serde(default)]
    wait_for: Vec<String>,
    #[serde(default)]
    wait_for_any: Vec<String>,
    #[serde(default, deserialize_with = "timeout_ms")]
    wait_timeout: Option<u64>,
    #[serde(default)]
    backoff: Option<BackoffEntry>,
    #[serde(default)]
    retry_on: Vec<RetryOnName>,
    #[serde(default)]
    reads: Vec<String>,
    #[serde(default)]
    writes: Vec<String>,
    #[serde(default, deserialize_with = "string_map")]
    requires: HashMap<String, String>,
    /// Expanded by [`crate::matrix`] once the file is read.
    #[serde(default, deserialize_with = "crate::matrix::foreach_field")]
    foreach: Option<serde_json::Value>,
}

/// `backoff: {initial: 1s, max: 30s, multiplier: 2, jitter: true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffEntry {
    #[serde(default, deserialize_with = "timeout_ms")]
    initial: Option<u64>,
    #[serde(default, deserialize_with = "timeout_ms")]
    max: Option<u64>,
    #[serde(default)]
    multiplier: f64,
    #[serde(default = "yes")]
    jitter: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RetryOnName {
    Failure,
    Timeout,
    LostWorker,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum OnFailureName {
    Continue,
    FailFast,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RetryFailedName {
    None,
    Sequential,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum HazardsName {
    Reject,
    Order,
    Allow,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RunIfName {
    Success,
    Always,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum PriorityName {
    Critical,
    High,
    Medium,
    Low,
}

impl BatchFile {
    fn into_batch(self) -> v1::Batch {
        v1::Batch {
            name: self.name,
            max_parallel: self.max_parallel,
            on_failure: match self.on_failure {
                None => v1::OnFailure::Unspecified,
                Some(OnFailureName::Continue) => v1::OnFailure::Continue,
                Some(OnFailureName::FailFast) => v1::OnFailure::FailFast,
            } as i32,
            hazards: match self.hazards {
                None => v1::Hazards::Unspecified,
                Some(HazardsName::Reject) => v1::Hazards::Reject,
                Some(HazardsName::Order) => v1::Hazards::Order,
                Some(HazardsName::Allow) => v1::Hazards::Allow,
            } as i32,
            ops: self.ops.ops,
            namespace: self.namespace,
            labels: self.labels,
            wait_timeout_ms: self.wait_timeout.unwrap_or(0),
            strict: self.strict,
            deadline_ms: self.deadline.unwrap_or(0),
            retry_failed: match self.retry_failed {
                None => v1::RetryFailed::Unspecified,
                Some(RetryFailedName::None) => v1::RetryFailed::None,
                Some(RetryFailedName::Sequential) => v1::RetryFailed::Sequential,
            } as i32,
            lost_worker_retries: self.retry.and_then(|retry| retry.lost_worker),
            trace_context: Default::default(),
            tenant: String::new(),
            allow_unwritten: self.allow_unwritten,
        }
    }
}

impl OpEntry {
    fn into_op(self) -> v1::Op {
        v1::Op {
            id: self.id,
            kind: self.kind,
            group: String::new(), // set by `foreach:` expansion
            args_json: self.args.map(|args| args.to_string()).unwrap_or_default(),
            after: self.after,
            run_if: match self.run_if {
                None => v1::RunIf::Unspecified,
                Some(RunIfName::Success) => v1::RunIf::Success,
                Some(RunIfName::Always) => v1::RunIf::Always,
            } as i32,
            timeout_ms: self.timeout.unwrap_or(0),
            attempts: self.attempts,
            priority: match self.priority {
                None => v1::Priority::Unspecified,
                Some(PriorityName::Critical) => v1::Priority::Critical,
                Some(PriorityName::High) => v1::Priority::High,
                Some(PriorityName::Medium) => v1::Priority::Medium,
                Some(PriorityName::Low) => v1::Priority::Low,
            } as i32,
            store_as: self.store_as,
            wait_for: self.wait_for,
            wait_for_any: self.wait_for_any,
            wait_timeout_ms: self.wait_timeout.unwrap_or(0),
            backoff: self.backoff.map(|backoff| v1::Backoff {
                initial_ms: backoff.initial.unwrap_or(0),
                max_ms: backoff.max.unwrap_or(0),
                multiplier: backoff.multiplier,
                no_jitter: !backoff.jitter,
            }),
            retry_on: self
                .retry_on
                .into_iter()
                .map(|name| match name {
                    RetryOnName::Failure => v1::RetryOn::Failure,
                    RetryOnName::Timeout => v1::RetryOn::Timeout,
                    RetryOnName::LostWorker => v1::RetryOn::LostWorker,
                } as i32)
                .collect(),
            reads: self.reads,
            writes: self.writes,
            requires: self.requires,
            max_output_bytes: self.max_output.unwrap_or(0),
        }
    }
}

/// `ops`, each turned into its proto as it is read: a million-op file is
/// never held as parsed entries (500+ bytes each) and protos at once.
fn ops_as_protos<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<crate::matrix::ReadOps, D::Error> {
    struct Ops;

    impl<'de> Visitor<'de> for Ops {
        type Value = crate::matrix::ReadOps;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a sequence")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut read = crate::matrix::ReadOps {
                ops: Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096)),
                foreach: Vec::new(),
            };
            while let Some(mut entry) = seq.next_element::<OpEntry>()? {
                if let Some(foreach) = entry.foreach.take() {
                    read.foreach.push((read.ops.len(), foreach));
                }
                read.ops.push(entry.into_op());
            }
            Ok(read)
        }
    }

    deserializer.deserialize_seq(Ops)
}

/// `args`: any mapping (null counts as none). A visitor rather than a
/// check afterwards, so the error carries the path and line of `args`.
fn args_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    struct ArgsVisitor;

    impl<'de> Visitor<'de> for ArgsVisitor {
        type Value = Option<serde_json::Value>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a mapping of argument names to values")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_any(ArgsVisitor)
}

/// `timeout`, `wait_timeout`: a humantime duration (`10m`, `1h 30m`, `250ms`) or whole
/// milliseconds.
/// `max_output: 16MiB` (or a number of bytes).
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct SizeVisitor;

    impl<'de> Visitor<'de> for SizeVisitor {
        type Value = Option<u64>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a size like `16MiB` or `500KB`, or whole bytes")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Self::Value, E> {
            Ok(Some(bytes))
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Self::Value, E> {
            u64::try_from(bytes)
                .map(Some)
                .map_err(|_| E::custom(format!("bad size {bytes}: a size cannot be negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            volley_kinds::parse_byte_size(text)
                .map(Some)
                .map_err(E::custom)
        }
    }

    deserializer.deserialize_any(SizeVisitor)
}

fn timeout_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct TimeoutVisitor;

    impl<'de> Visitor<'de> for TimeoutVisitor {
        type Value = Option<u64>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a duration like `10m` or `1h 30m`, or whole milliseconds")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Self::Value, E> {
            if (1..file_problems::BARE_MILLIS_WARN_BELOW).contains(&millis) {
                SMALL_BARE_MILLIS.with(|flag| flag.set(true));
            }
            Ok(Some(millis))
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Self::Value, E> {
            if let Ok(unsigned) = u64::try_from(millis) {
                return self.visit_u64(unsigned);
            }
            u64::try_from(millis).map(Some).map_err(|_| {
                E::custom(format!(
                    "bad duration {millis}: a timeout cannot be negative"
                ))
            })
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            let duration = humantime::parse_duration(text.trim()).map_err(|error| {
                E::custom(format!(
                    "bad duration `{text}`: {error} (try `90s`, `10m`, `1h 30m`)"
                ))
            })?;
            u64::try_from(duration.as_millis())
                .map(Some)
                .map_err(|_| E::custom(format!("bad duration `{text}`: too long")))
        }
    }

    deserializer.deserialize_any(TimeoutVisitor)
}

/// A mapping of strings to strings, where YAML's unquoted `true` or `8`
/// count as the strings they spell.
fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<HashMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Flag(bool),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
    }

    let map: Option<BTreeMap<String, Scalar>> = Option::deserialize(deserializer)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Scalar::Text(text) => text,
                Scalar::Flag(flag) => flag.to_string(),
                Scalar::Unsigned(number) => number.to_string(),
                Scalar::Signed(number) => number.to_string(),
                Scalar::Float(number) => number.to_string(),
            };
            (key, value)
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn retry_lost_worker_sets_the_batch_s_lost_worker_retries() {
        let unset = parse_batch("ops: []", "b.yaml").unwrap();
        assert_eq!(unset.lost_worker_retries, None);
        let none = parse_batch("retry: {lost_worker: 0}\nops: []", "b.yaml").unwrap();
        assert_eq!(none.lost_worker_retries, Some(0));
        let five = parse_batch("retry: {lost_worker: 5}\nops: []", "b.yaml").unwrap();
        assert_eq!(five.lost_worker_retries, Some(5));
        let typo = parse_batch("retry: {lost_workers: 5}\nops: []", "b.yaml").unwrap_err();
        assert!(typo.to_string().contains("lost_workers"), "{typo}");
        let negative = parse_batch("retry: {lost_worker: -1}\nops: []", "b.yaml").unwrap_err();
        assert!(negative.to_string().contains("lost_worker"), "{negative}");
    }

    const GOOD_YAML: &str = r#"
name: release-check
max_parallel: 8
on_failure: fail_fast
hazards: order
namespace: team-a
labels: {team: x}
ops:
  - id: lint
    kind: shell
    args: {cmd: "cargo clippy", env: {A: "1"}}
    timeout: 10m
    attempts: 3
    priority: high
    store_as: swarm/lint
    requires: {gpu: true}
  - id: report
    kind: write
    after: [lint]
    run_if: always
    timeout: 1500
    args:
      path: reports/ready.md
      content: "lint: ${ops.lint.status}"
    wait_for: [k1]
    wait_for_any: [k2, k3]
    wait_timeout: 30s
    backoff: {initial: 250ms, max: 10s, multiplier: 3}
    retry_on: [timeout, lost_worker]
    reads: [a.txt]
    writes: [b.txt]
  - id: idle
    kind: noop
"#;

    #[test]
    fn good_yaml() {
        let batch = parse_batch(GOOD_YAML, "release.yaml").unwrap();
        assert_eq!(batch.name, "release-check");
        assert_eq!(batch.max_parallel, 8);
        assert_eq!(batch.on_failure, v1::OnFailure::FailFast as i32);
        assert_eq!(batch.hazards, v1::Hazards::Order as i32);
        assert_eq!(batch.namespace, "team-a");
        let waiter = batch
            .ops
            .iter()
            .find(|op| !op.wait_for_any.is_empty())
            .expect("waiter");
        assert_eq!(waiter.wait_for_any, vec!["k2".to_owned(), "k3".to_owned()]);
        assert_eq!(waiter.wait_timeout_ms, 30_000);
        let backoff = waiter.backoff.expect("backoff");
        assert_eq!(
            (
                backoff.initial_ms,
                backoff.max_ms,
                backoff.multiplier,
                backoff.no_jitter
            ),
            (250, 10_000, 3.0, false)
        );
        assert_eq!(
            waiter.retry_on,
            vec![v1::RetryOn::Timeout as i32, v1::RetryOn::LostWorker as i32]
        );
        assert_eq!(batch.labels.get("team").map(String::as_str), Some("x"));
        let [lint, report, idle] = &batch.ops[..] else {
            panic!("three ops")
        };
        assert_eq!(lint.kind, "shell");
        let args: serde_json::Value = serde_json::from_str(&lint.args_json).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"cmd": "cargo clippy", "env": {"A": "1"}})
        );
        assert_eq!(lint.timeout_ms, 600_000);
        assert_eq!(lint.attempts, 3);
        assert_eq!(lint.priority, v1::Priority::High as i32);
        assert_eq!(lint.store_as, "swarm/lint");
        assert_eq!(lint.requires.get("gpu").map(String::as_str), Some("true"));
        assert_eq!(report.after, vec!["lint"]);
        assert_eq!(report.run_if, v1::RunIf::Always as i32);
        assert_eq!(report.timeout_ms, 1500);
        assert!(report.args_json.contains("${ops.lint.status}"));
        assert_eq!(
            (
                report.wait_for.clone(),
                report.reads.clone(),
                report.writes.clone()
            ),
            (
                vec!["k1".to_owned()],
                vec!["a.txt".to_owned()],
                vec!["b.txt".to_owned()]
            )
        );
        assert_eq!(idle.args_json, "");
        assert_eq!(idle.priority, v1::Priority::Unspecified as i32);
    }

    #[test]
    fn good_json() {
        let text = r#"
            {"name": "j", "ops": [
                {"id": "a", "kind": "echo", "args": {"text": "hi"}, "timeout": "2s", "priority": "low"},
                {"id": "b", "kind": "noop", "after": ["a"], "timeout": 50}
            ]}"#;
        let batch = parse_batch(text, "j.json").unwrap();
        assert_eq!(batch.name, "j");
        assert_eq!(batch.ops.len(), 2);
        assert_eq!(batch.ops[0].args_json, r#"{"text":"hi"}"#);
        assert_eq!(batch.ops[0].timeout_ms, 2000);
        assert_eq!(batch.ops[0].priority, v1::Priority::Low as i32);
        assert_eq!(batch.ops[1].after, vec!["a"]);
        assert_eq!(batch.ops[1].timeout_ms, 50);
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let text = "name: x\nops:\n  - id: a\n    after: [b\n";
        let error = parse_batch(text, "bad.yaml").unwrap_err();
        let BatchFileError::Syntax {
            source_name,
            line,
            column,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!((source_name.as_str(), *line, *column), ("bad.yaml", 5, 1));
        assert!(error.to_string().starts_with("bad.yaml:5:1: "), "{error}");
    }

    #[test]
    fn json_syntax_error_has_line_and_column() {
        let error = parse_batch("{\"ops\": [\n  {\"id\": \"a\",, }\n]}", "bad.json").unwrap_err();
        let BatchFileError::Syntax { line, column, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!((*line, *column), (2, 14));
        assert!(error.to_string().starts_with("bad.json:2:14: "), "{error}");
    }

    #[test]
    fn unknown_op_field() {
        let text = "ops:\n  - id: a\n    kind: noop\n  - id: b\n    kind: noop\n    afer: [a]\n";
        let error = parse_batch(text, "typo.yaml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "typo.yaml: 1 unknown field(s); nothing ran:\n  op `b`: field `afer` (line 6): unknown field; did you mean `after`?"
        );
    }

    #[test]
    fn every_unknown_field_is_named_at_once_with_a_suggestion_or_its_place() {
        let text = "name: x\nmax_paralel: 2\nops:\n  - id: a\n    kind: shell\n    timout: 5s\n    args:\n      cmd: ls\n  - id: b\n    kind: shell\n    cmd: ls\n    backoff: {inital: 1s}\n  - id: c\n    kind: custom\n    zzzzzz: 1\n";
        let error = parse_batch(text, "t.yaml").unwrap_err();
        let BatchFileError::UnknownFields { problems, .. } = &error else {
            panic!("{error}")
        };
        let found: Vec<(Option<&str>, &str, Option<usize>)> = problems
            .iter()
            .map(|problem| {
                (
                    problem.op_id.as_deref(),
                    problem.field.as_str(),
                    problem.line,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (None, "max_paralel", Some(2)),
                (Some("a"), "timout", Some(6)),
                (Some("b"), "cmd", Some(11)),
                (Some("b"), "backoff.inital", Some(12)),
                (Some("c"), "zzzzzz", Some(15)),
            ]
        );
        assert_eq!(
            problems[0].message,
            "unknown field; did you mean `max_parallel`?"
        );
        assert_eq!(
            problems[1].message,
            "unknown field; did you mean `timeout`?"
        );
        assert_eq!(
            problems[2].message,
            "unknown field: `cmd` belongs under `args:` (kind `shell` takes `cmd`); indent it under `args:`"
        );
        assert_eq!(
            problems[3].message,
            "unknown field; did you mean `initial`?"
        );
        assert!(
            problems[4]
                .message
                .starts_with("unknown field; known fields are `id`, `kind`")
        );
    }

    #[test]
    fn a_typo_in_every_op_of_a_big_file_lists_a_few_and_counts_the_rest() {
        let mut text = String::from("ops:\n");
        for index in 0..20_000 {
            text.push_str(&format!(
                "  - id: op{index}\n    kind: noop\n    timout: 1s\n"
            ));
        }
        let started = std::time::Instant::now();
        let error = parse_batch(&text, "big.yaml").unwrap_err();
        let BatchFileError::UnknownFields {
            problems, total, ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!(
            (problems.len(), *total),
            (file_problems::MAX_LISTED, 20_000)
        );
        assert_eq!(problems[99].line, Some(301));
        assert!(
            error.to_string().ends_with("… and 19900 more not shown"),
            "{error}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn small_bare_durations_are_warned_about_and_units_silence_them() {
        let text = "deadline: 20\nops:\n  - id: a\n    kind: noop\n    timeout: 30\n    backoff: {initial: 5}\n  - id: b\n    kind: noop\n    timeout: 30ms\n    wait_timeout: 5000\n";
        let (batch, warnings) = parse_batch_with_warnings(text, "t.yaml").unwrap();
        assert_eq!(batch.ops[0].timeout_ms, 30);
        assert_eq!(
            warnings,
            [
                "the batch: `deadline: 20` is 20 ms; write `20s` if you meant seconds (write `20ms` to silence this)",
                "op `a`: `timeout: 30` is 30 ms; write `30s` if you meant seconds (write `30ms` to silence this)",
                "op `a`: `backoff.initial: 5` is 5 ms; write `5s` if you meant seconds (write `5ms` to silence this)",
            ]
        );
        let (_, warnings) =
            parse_batch_with_warnings("ops:\n  - {id: a, kind: noop, timeout: 30s}\n", "t")
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn unknown_top_level_field() {
        let error = parse_batch("nmae: x\nops: []\n", "typo.yaml").unwrap_err();
        let BatchFileError::UnknownFields { problems, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            (problems[0].op_id.as_deref(), problems[0].field.as_str()),
            (None, "nmae")
        );
        assert_eq!(problems[0].message, "unknown field; did you mean `name`?");
    }

    #[test]
    fn unknown_field_in_json() {
        let error = parse_batch(
            r#"{"ops": [{"id": "a", "kind": "noop", "afer": []}]}"#,
            "t.json",
        )
        .unwrap_err();
        let BatchFileError::UnknownFields { problems, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(
            (problems[0].op_id.as_deref(), problems[0].field.as_str()),
            (Some("a"), "afer")
        );
    }

    #[test]
    fn op_without_id_is_named_by_position() {
        let text = "ops:\n  - id: a\n    kind: noop\n  - kind: noop\n";
        let error = parse_batch(text, "t.yaml").unwrap_err();
        let BatchFileError::Field {
            op_id,
            field,
            message,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!((op_id.as_deref(), field.as_str()), (None, "id"));
        assert!(message.starts_with("op #2 "), "{message}");
    }

    #[test]
    fn not_a_mapping() {
        let error = parse_batch("- a\n- b\n", "t.yaml").unwrap_err();
        assert!(matches!(error, BatchFileError::NotABatch { .. }), "{error}");
        let error = parse_batch("hello world\n", "notes.txt").unwrap_err();
        assert_eq!(
            error.to_string(),
            "notes.txt: a batch file is a YAML or JSON mapping with `ops:` (a list of ops, each with `id`, `kind` and `args`) and optional batch settings; line 1 is plain text"
        );
        assert!(!error.to_string().contains("BatchFile"));
    }

    #[test]
    fn bad_duration() {
        let text = "ops:\n  - id: slow\n    kind: noop\n    timeout: 10 parsecs\n";
        let error = parse_batch(text, "t.yaml").unwrap_err();
        let BatchFileError::Field {
            op_id,
            field,
            message,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!(
            (op_id.as_deref(), field.as_str()),
            (Some("slow"), "timeout")
        );
        assert!(
            message.contains("10 parsecs") && message.contains("line 4"),
            "{message}"
        );
    }

    #[test]
    fn bad_priority() {
        let text = "ops:\n  - id: p\n    kind: noop\n    priority: urgent\n";
        let error = parse_batch(text, "t.yaml").unwrap_err();
        let BatchFileError::Field {
            op_id,
            field,
            message,
            ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!((op_id.as_deref(), field.as_str()), (Some("p"), "priority"));
        assert!(
            message.contains("urgent") && message.contains("critical"),
            "{message}"
        );
    }

    #[test]
    fn args_must_be_a_mapping() {
        let error =
            parse_batch("ops:\n  - id: a\n    kind: echo\n    args: [1]\n", "t.yaml").unwrap_err();
        let BatchFileError::Field { op_id, field, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!((op_id.as_deref(), field.as_str()), (Some("a"), "args"));
    }

    #[test]
    fn missing_file_is_io() {
        let error = read_batch_file(Path::new("/nonexistent/volley/batch.yaml")).unwrap_err();
        assert!(matches!(error, BatchFileError::Io { .. }), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let flow = format!(
            "name: deep\nops:\n  - {{id: a, kind: echo, args: {{text: {}x{}}}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let error = parse_batch(&flow, "deep.yaml").unwrap_err();
        assert!(
            error.to_string().starts_with("deep.yaml:3:")
                && error.to_string().contains("nested deeper than 64 levels"),
            "{error}"
        );
        // Not a timing assertion: a guard that the check ran before the parser.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let dashes = format!("name: deep\nops:\n  {}x\n", "- ".repeat(100_000));
        let error = parse_batch(&dashes, "dashes.yaml").unwrap_err();
        assert!(error.to_string().contains("nested deeper"), "{error}");
        // Brackets in quotes and comments are text, and a real batch passes.
        let quoted = format!(
            "name: ok # {}\nops:\n  - {{id: a, kind: echo, args: {{text: '{}'}}}}\n  - {{id: b, kind: echo, args: {{text: \"{}\"}}}}\n",
            "[".repeat(200),
            "[".repeat(200),
            "{".repeat(200)
        );
        let batch = parse_batch(&quoted, "ok.yaml").unwrap();
        assert_eq!(batch.ops.len(), 2);
    }
}
