//! How a batch looks to a person: progress while it runs (a bar on a TTY,
//! plain event lines otherwise, both on stderr), then the report on stdout
//! (a table and the timing lines, or one JSON document).

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use volley_client::v1::{self, BatchState, EventKind, OpState};
use volley_client::{Client, ClientError};
use volley_proto::streams::{OpStreams, streams};
use volley_proto::words;

use super::commands::OutputFormat;

/// At most this many rows in the table; the rest are summarised (all of
/// them are in `--output json`).
const MAX_TABLE_ROWS: usize = 200;

/// At most this many failed ops are named under a report's summary (with
/// their first error line); the rest are counted.
const MAX_FAILED_NAMED: usize = 10;

/// At most this many `foreach:` groups are summed up under a table.
const MAX_GROUPS_NAMED: usize = 20;

/// Set by `volley run`: its batch is gone once the report is printed, so
/// the report points to `--output json`, not to `volley logs`.
static REPORT_OF_A_RUN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set by `--logs-dir`: where the report writes each op's output and
/// stderr, one file each, as the ops stream by.
static LOGS_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Reports from now on also write each op's output to `DIR/OP.out` and
/// its stderr to `DIR/OP.err` (`--logs-dir`). Creates `dir`; an error says
/// why it cannot be used, before anything runs.
pub fn write_logs_to(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("--logs-dir {}: {error}", dir.display()))?;
    let _ = LOGS_DIR.set(dir.to_owned());
    Ok(())
}

/// An op's output and stderr, and whether that stderr was cut (see
/// [`volley_proto::streams`]).
/// Writes `op`'s streams under the `--logs-dir`, if one was given. An op
/// id is a file name (`A-Z a-z 0-9 _ . -`, no `/`), so nothing lands
/// outside the directory. False once a write failed (said once).
fn write_op_logs(op: &v1::OpStatus) -> bool {
    let Some(dir) = LOGS_DIR.get() else {
        return true;
    };
    if op.id.is_empty() || op.id.contains(['/', '\\', '\0']) {
        return true;
    }
    let OpStreams { stdout, stderr, .. } = streams(op);
    let written = std::fs::write(dir.join(format!("{}.out", op.id)), stdout)
        .and_then(|()| std::fs::write(dir.join(format!("{}.err", op.id)), stderr));
    if let Err(error) = written {
        eprintln!(
            "warning: --logs-dir {}: cannot write op `{}`'s logs: {error}",
            dir.display(),
            op.id
        );
        return false;
    }
    true
}

/// The reports this process prints are of `volley run`'s own batch.
pub fn reports_are_of_a_run() {
    REPORT_OF_A_RUN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Follows a batch's events to its end, showing progress on stderr.
/// Returns the last sequence number seen.
pub async fn follow(
    events: impl Stream<Item = Result<v1::BatchEvent, ClientError>>,
    total: u32,
    format: OutputFormat,
) -> Result<u64, ClientError> {
    let stderr_is_tty = std::io::stderr().is_terminal();
    let bar = if stderr_is_tty {
        let bar = ProgressBar::new(u64::from(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let plain_lines = bar.is_none() && format == OutputFormat::Table;
    let mut tally = Tally::default();
    let mut last_seq = 0;
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let event = event?;
        last_seq = event.seq;
        tally.record(&event);
        if event.kind() == EventKind::OpsAdded {
            // "N ops added …": the batch grew while it ran.
            let added = event
                .message
                .split_whitespace()
                .next()
                .and_then(|count| count.parse::<u64>().ok());
            if let (Some(bar), Some(added)) = (&bar, added) {
                bar.inc_length(added);
            }
        }
        if let Some(bar) = &bar {
            bar.set_position(u64::from(tally.ended()));
            bar.set_message(tally.words());
        } else if plain_lines {
            eprintln!("{}", event_line(&event));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(last_seq)
}

/// Where each op stands, from its events: the last word wins, so an op
/// that failed and then succeeded in a retry (the sequential pass, say)
/// counts once, as succeeded, and the counts always add up to the ops seen.
#[derive(Default)]
struct Tally {
    ops: std::collections::HashMap<String, OpPhase>,
    /// How many ops are in each phase, indexed by `OpPhase as usize`.
    counts: [u32; 5],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Skipped or cancelled.
    Other,
}

impl Tally {
    fn record(&mut self, event: &v1::BatchEvent) {
        let phase = match event.kind() {
            EventKind::OpStarted => OpPhase::Running,
            EventKind::OpSucceeded => OpPhase::Succeeded,
            EventKind::OpFailed => OpPhase::Failed,
            EventKind::OpRetrying => OpPhase::Pending,
            EventKind::OpSkipped | EventKind::OpCancelled => OpPhase::Other,
            _ => return,
        };
        if let Some(before) = self.ops.insert(event.op_id.clone(), phase) {
            self.counts[before as usize] -= 1;
        }
        self.counts[phase as usize] += 1;
    }

    fn count(&self, phase: OpPhase) -> u32 {
        self.counts[phase as usize]
    }

    /// Ops that have ended (succeeded, failed, skipped or cancelled).
    fn ended(&self) -> u32 {
        self.count(OpPhase::Succeeded) + self.count(OpPhase::Failed) + self.count(OpPhase::Other)
    }

    fn words(&self) -> String {
        format!(
            "running {} · succeeded {} · failed {}",
            self.count(OpPhase::Running),
            self.count(OpPhase::Succeeded),
            self.count(OpPhase::Failed)
        )
    }
}

fn event_line(event: &v1::BatchEvent) -> String {
    let what = match event.kind() {
        EventKind::BatchSubmitted => "batch submitted".to_owned(),
        // The coordinator has claimed the op to hand it to a worker; when
        // no worker can take it a `blocked` line follows, so "started"
        // would tell a story that did not happen.
        EventKind::OpStarted => format!("starting  {} (attempt {})", event.op_id, event.attempt),
        EventKind::OpSucceeded => format!("succeeded {} on {}", event.op_id, event.worker),
        EventKind::OpFailed => format!(
            "failed    {} on {}: {}",
            event.op_id,
            event.worker,
            first_line(&event.message)
        ),
        EventKind::OpRetrying => {
            format!("retrying  {}: {}", event.op_id, first_line(&event.message))
        }
        EventKind::OpSkipped => {
            format!("skipped   {}: {}", event.op_id, first_line(&event.message))
        }
        EventKind::OpCancelled => {
            format!(
                "cancelled {}: {}",
                event.op_id,
                first_line(error_words(&event.message))
            )
        }
        EventKind::BatchFinished => format!("batch {}", words::batch_state(event.batch_state())),
        // "N ops added by token T (op `X`)": the store's words say who.
        EventKind::OpsAdded => format!("grew      {}", event.message),
        EventKind::OpBlocked => {
            format!("blocked   {}: {}", event.op_id, first_line(&event.message))
        }
        EventKind::Unspecified => "event".to_owned(),
    };
    format!("[{:>5}] {what}", event.seq)
}

/// The most characters of a message an event line shows: room for a lost
/// worker's error with its name, time and retry count.
const EVENT_MESSAGE_CHARS: usize = 160;

fn first_line(text: &str) -> String {
    one_line(first_line_of(text), EVENT_MESSAGE_CHARS)
}

/// The first line of `text` that is not blank.
fn first_line_of(text: &str) -> &str {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
}

/// `line` as one printable line of at most `max` characters, `…` last
/// when cut: tabs become spaces and other control characters (a stray
/// `\r`, an escape sequence an op printed) are dropped, so a cell can
/// neither wrap nor paint the terminal.
fn one_line(line: &str, max: usize) -> String {
    let mut printable = line
        .chars()
        .filter_map(|character| match character {
            '\t' => Some(' '),
            character if character.is_control() => None,
            character => Some(character),
        })
        .peekable();
    let mut shown = String::new();
    let mut count = 0;
    while let Some(character) = printable.next() {
        if count + 1 == max && printable.peek().is_some() {
            shown.push('…');
            break;
        }
        if count == max {
            break;
        }
        shown.push(character);
        count += 1;
    }
    shown
}

pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Ops per status page when a report is read from the coordinator.
const REPORT_PAGE_OPS: u32 = 2_000;

/// Reads the batch's status page by page and prints its report on stdout
/// as the pages come: a batch of a million ops is never held whole, as
/// protos, as one JSON value or as one string. Returns the first page (the
/// batch's counters, times and critical path; its ops taken out).
pub async fn print_report(
    client: &Client,
    batch_id: &str,
    format: OutputFormat,
) -> Result<v1::BatchStatus, ClientError> {
    let mut summary = client.status_page(batch_id, 0, REPORT_PAGE_OPS).await?;
    let mut ops = std::mem::take(&mut summary.ops);
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    let mut json = match format {
        OutputFormat::Json => Some(JsonReportWriter::begin(&mut out, &summary)),
        OutputFormat::Table => None,
    }
    .transpose();
    let mut rows = TableRows::default();
    let mut next = 0u32;
    let mut logs_ok = true;
    loop {
        let got = ops.len() as u32;
        next = next.saturating_add(got);
        for op in ops {
            if logs_ok {
                logs_ok = write_op_logs(&op);
            }
            match &mut json {
                Ok(Some(writer)) => {
                    if let Err(error) = writer.op(&op) {
                        json = Err(error);
                    }
                }
                Ok(None) => rows.push(op),
                // stdout went away: read no more.
                Err(_) => break,
            }
        }
        // A coordinator that predates paging sent every op at once.
        if json.is_err() || got < REPORT_PAGE_OPS || next >= summary.total {
            break;
        }
        let mut page = client.status_page(batch_id, next, REPORT_PAGE_OPS).await?;
        ops = std::mem::take(&mut page.ops);
    }
    let written = match json {
        Ok(Some(writer)) => writer.finish(&summary),
        Ok(None) => out.write_all(report_text(&summary, &rows).as_bytes()),
        Err(error) => Err(error),
    };
    // A closed stdout (`| head`) is not worth a panic.
    let _ = written.and_then(|()| out.flush());
    Ok(summary)
}

/// The ops a table shows, chosen as they stream by: all of them when they
/// fit, else failures first (what one looks for), each group in index
/// order.
#[derive(Default)]
pub struct TableRows {
    not_succeeded: Vec<(usize, v1::OpStatus)>,
    succeeded: Vec<(usize, v1::OpStatus)>,
    seen: usize,
    /// The first [`MAX_FAILED_NAMED`] failed ops, id and first error line,
    /// named under the summary; `failed_seen` counts them all.
    failed: Vec<(String, String)>,
    failed_seen: usize,
    /// Each `foreach:` group's ops counted by state, in the order first
    /// seen.
    groups: Vec<GroupTally>,
    group_at: std::collections::HashMap<String, usize>,
    /// The first [`MAX_FAILED_NAMED`] ops that succeeded only after more
    /// than one attempt; `retried_seen` counts them all.
    retried: Vec<String>,
    retried_seen: usize,
}

/// The ops of one `foreach:` group, counted by state.
struct GroupTally {
    id: String,
    total: u32,
    succeeded: u32,
    failed: u32,
    skipped: u32,
    cancelled: u32,
}

impl GroupTally {
    fn count(&mut self, state: OpState) {
        self.total += 1;
        match state {
            OpState::Succeeded => self.succeeded += 1,
            OpState::Failed => self.failed += 1,
            OpState::Skipped => self.skipped += 1,
            OpState::Cancelled => self.cancelled += 1,
            _ => {}
        }
    }

    /// `200 ops: 196 succeeded, 4 failed` (states with no op left out).
    fn words(&self) -> String {
        let ended = self.succeeded + self.failed + self.skipped + self.cancelled;
        let counts: Vec<String> = [
            (self.succeeded, "succeeded"),
            (self.failed, "failed"),
            (self.skipped, "skipped"),
            (self.cancelled, "cancelled"),
            (self.total - ended, "not finished"),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, word)| format!("{count} {word}"))
        .collect();
        let ops = if self.total == 1 { "op" } else { "ops" };
        format!("{} {ops}: {}", self.total, counts.join(", "))
    }
}

impl TableRows {
    pub fn push(&mut self, op: v1::OpStatus) {
        if op.state() == OpState::Succeeded && op.attempts > 1 {
            if self.retried.len() < MAX_FAILED_NAMED {
                self.retried.push(op.id.clone());
            }
            self.retried_seen += 1;
        }
        if !op.group.is_empty() {
            let at = match self.group_at.get(&op.group) {
                Some(at) => *at,
                None => {
                    self.group_at.insert(op.group.clone(), self.groups.len());
                    self.groups.push(GroupTally {
                        id: op.group.clone(),
                        total: 0,
                        succeeded: 0,
                        failed: 0,
                        skipped: 0,
                        cancelled: 0,
                    });
                    self.groups.len() - 1
                }
            };
            self.groups[at].count(op.state());
        }
        if op.state() == OpState::Failed {
            if self.failed.len() < MAX_FAILED_NAMED {
                self.failed
                    .push((op.id.clone(), one_line(first_line_of(&op.error), 100)));
            }
            self.failed_seen += 1;
        }
        let kept = if op.state() == OpState::Succeeded {
            &mut self.succeeded
        } else {
            &mut self.not_succeeded
        };
        if kept.len() < MAX_TABLE_ROWS {
            kept.push((self.seen, op));
        }
        self.seen += 1;
    }

    /// The rows to show, in order.
    fn chosen(&self) -> Vec<&v1::OpStatus> {
        let mut chosen: Vec<&(usize, v1::OpStatus)> = self
            .not_succeeded
            .iter()
            .chain(self.succeeded.iter())
            .collect();
        if self.seen <= MAX_TABLE_ROWS {
            chosen.sort_by_key(|(index, _)| *index);
        }
        chosen
            .into_iter()
            .take(MAX_TABLE_ROWS)
            .map(|(_, op)| op)
            .collect()
    }
}

/// Writes the JSON report piece by piece: the fields before `ops`, each op
/// as it comes, then the rest. Keys are sorted (the order a
/// `serde_json::Value` map prints in, which this document has always had)
/// and the whole is byte for byte what `serde_json`'s pretty printer makes
/// of it.
pub struct JsonReportWriter<'out, W: Write> {
    out: &'out mut W,
    ops_written: usize,
    scratch: Vec<u8>,
}

/// One op in the JSON report (fields in sorted order).
#[derive(Serialize)]
struct OpJson<'a> {
    after: &'a [String],
    attempts: u32,
    details: serde_json::Value,
    duration_ms: u64,
    error: &'a str,
    /// Only for ops expanded from a `foreach:` (documents of batches
    /// without one read as they always have).
    #[serde(skip_serializing_if = "str::is_empty")]
    group: &'a str,
    id: &'a str,
    kind: &'a str,
    output: &'a str,
    started_ms: u64,
    state: &'static str,
    worker: &'a str,
}

impl<'out, W: Write> JsonReportWriter<'out, W> {
    /// Writes the document's opening and the fields that sort before `ops`.
    pub fn begin(out: &'out mut W, status: &v1::BatchStatus) -> io::Result<Self> {
        let mut writer = JsonReportWriter {
            out,
            ops_written: 0,
            scratch: Vec::with_capacity(1024),
        };
        writer.out.write_all(b"{\n")?;
        writer.field("batch_id", &status.batch_id)?;
        writer.field("cancelled", &status.cancelled)?;
        writer.field("critical_path", &status.critical_path)?;
        writer.field("critical_path_ms", &status.critical_path_ms)?;
        writer.field("error", &status.error)?;
        writer.field("failed", &status.failed)?;
        writer.field("name", &status.name)?;
        writer.out.write_all(b"  \"ops\": [")?;
        Ok(writer)
    }

    pub fn op(&mut self, op: &v1::OpStatus) -> io::Result<()> {
        let details = if op.details_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&op.details_json).unwrap_or(serde_json::Value::Null)
        };
        let row = OpJson {
            after: &op.after,
            attempts: op.attempts,
            details,
            duration_ms: op.duration_ms,
            error: &op.error,
            group: &op.group,
            id: &op.id,
            kind: &op.kind,
            output: &op.output,
            started_ms: op.started_ms,
            state: words::op_state(op.state()),
            worker: &op.worker,
        };
        self.out
            .write_all(if self.ops_written == 0 { b"\n" } else { b",\n" })?;
        self.ops_written += 1;
        self.out.write_all(b"    ")?;
        self.value(&row, b"\n    ")
    }

    /// Closes `ops` and writes the fields that sort after it.
    pub fn finish(mut self, status: &v1::BatchStatus) -> io::Result<()> {
        if self.ops_written > 0 {
            self.out.write_all(b"\n  ")?;
        }
        self.out.write_all(b"],\n")?;
        self.field("owner", &status.owner)?;
        self.field("sequential_ms", &status.sequential_ms)?;
        self.field("skipped", &status.skipped)?;
        self.field("speedup", &((status.speedup * 100.0).round() / 100.0))?;
        self.field("state", words::batch_state(status.state()))?;
        self.field("succeeded", &status.succeeded)?;
        self.field("total", &status.total)?;
        self.out.write_all(b"  \"wall_ms\": ")?;
        self.value(&status.wall_ms, b"\n  ")?;
        self.out.write_all(b"\n}\n")
    }

    /// `  "key": value,` and a newline.
    fn field(&mut self, key: &str, value: &(impl Serialize + ?Sized)) -> io::Result<()> {
        self.out.write_all(b"  ")?;
        serde_json::to_writer(&mut *self.out, key)?;
        self.out.write_all(b": ")?;
        self.value(value, b"\n  ")?;
        self.out.write_all(b",\n")
    }

    /// `value` pretty-printed, each line after its first indented as the
    /// place it is written at (JSON strings hold no raw newlines, so every
    /// newline is the printer's).
    fn value(&mut self, value: &(impl Serialize + ?Sized), newline: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        serde_json::to_writer_pretty(&mut self.scratch, value)?;
        let mut lines = self.scratch.split(|byte| *byte == b'\n');
        if let Some(first) = lines.next() {
            self.out.write_all(first)?;
        }
        for line in lines {
            self.out.write_all(newline)?;
            self.out.write_all(line)?;
        }
        Ok(())
    }
}

/// The table's columns, in order.
const COLUMNS: [&str; 7] = [
    "op",
    "kind",
    "state",
    "tries",
    "worker",
    "time",
    "output / error",
];
const WORKER_COLUMN: usize = 4;
const OUTPUT_COLUMN: usize = 6;
/// The columns that give up room to the output column when the terminal
/// is narrow, and the fewest characters each keeps.
const SHRINKABLE: [(usize, usize); 3] = [(0, 12), (1, 5), (4, 6)];
/// The widest a cell is without a terminal to fit (a file, a pipe):
/// still one line.
const MAX_CELL_CHARS: usize = 80;
/// What a table of `columns` columns with [`UTF8_BORDERS_ONLY`] spends on
/// borders and padding: the two outer borders, one space each side of
/// every cell, and the (blank) line between two columns.
fn table_overhead(columns: usize) -> usize {
    2 + 2 * columns + columns.saturating_sub(1)
}

/// How wide the report may be: `COLUMNS` when set (as a shell sets it for
/// scripts, and as tests pin it), else the terminal's width when stdout is
/// one, else no limit.
fn report_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|columns| *columns >= 20)
    {
        return Some(columns);
    }
    Table::new().width().map(usize::from)
}

/// Each column's width (`None`: not shown): what its cells need when that
/// fits in `width`; else the worker column goes (the least a reader needs
/// at a glance), then the op, kind and worker columns give up room (widest
/// first, down to a floor) until the output column has a fair share, and
/// the output column takes what is left.
fn fit_widths(natural: [usize; 7], width: Option<usize>) -> [Option<usize>; 7] {
    let Some(width) = width else {
        return natural.map(Some);
    };
    if natural.iter().sum::<usize>() + table_overhead(natural.len()) <= width {
        return natural.map(Some);
    }
    let mut widths = natural.map(Some);
    widths[WORKER_COLUMN] = None;
    let shown = widths.iter().flatten().count();
    let available = width.saturating_sub(table_overhead(shown));
    let others = |widths: &[Option<usize>; 7]| -> usize {
        widths
            .iter()
            .enumerate()
            .filter(|(column, _)| *column != OUTPUT_COLUMN)
            .filter_map(|(_, width)| *width)
            .sum()
    };
    let output_wish = natural[OUTPUT_COLUMN].min((available * 2 / 5).max(12));
    while others(&widths) + output_wish > available {
        let widest = SHRINKABLE
            .iter()
            .filter_map(|(column, floor)| {
                widths[*column]
                    .filter(|width| width > floor)
                    .map(|width| (*column, width - floor))
            })
            .max_by_key(|(_, room)| *room);
        match widest {
            Some((column, _)) => widths[column] = widths[column].map(|width| width - 1),
            None => break,
        }
    }
    widths[OUTPUT_COLUMN] = Some(
        natural[OUTPUT_COLUMN]
            .min(available.saturating_sub(others(&widths)))
            .max(3),
    );
    widths
}

/// An op's duration cell: `—` for an op that never ran (a cancelled or
/// skipped op's 0 ms says nothing).
fn duration_cell(op: &v1::OpStatus) -> String {
    if op.attempts == 0 && op.duration_ms == 0 {
        "—".to_owned()
    } else {
        duration(op.duration_ms)
    }
}

/// An error as the report words it: the store spells a cancel's reason
/// after `cancelled: `, which the state already says.
fn error_words(error: &str) -> &str {
    error.strip_prefix("cancelled: ").unwrap_or(error)
}

/// Whether the op's details hold a stderr with something in it (a `shell`
/// op's, say): the table shows none of it.
fn has_stderr(op: &v1::OpStatus) -> bool {
    !op.details_json.is_empty()
        && serde_json::from_str::<serde_json::Value>(&op.details_json).is_ok_and(|details| {
            details
                .get("stderr")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|stderr| !stderr.trim().is_empty())
        })
}

/// The table of `rows` and the batch's summary lines.
pub fn report_text(status: &v1::BatchStatus, rows: &TableRows) -> String {
    report_text_within(status, rows, report_width())
}

/// [`report_text`] fitted to `width` characters (none: no limit): every
/// cell one line, cut with `…`, the output column given the room.
fn report_text_within(status: &v1::BatchStatus, rows: &TableRows, width: Option<usize>) -> String {
    let of_a_run = REPORT_OF_A_RUN.load(std::sync::atomic::Ordering::Relaxed);
    let chosen = rows.chosen();
    // Something more than the table shows: a cut cell, a second line, a
    // stderr kept in the details.
    let mut more_to_see = false;
    let cells: Vec<[String; 7]> = chosen
        .iter()
        .map(|op| {
            let text = if op.error.is_empty() {
                &op.output
            } else {
                error_words(&op.error)
            };
            let line = first_line_of(text);
            if line.len() < text.trim_end().len() || has_stderr(op) {
                more_to_see = true;
            }
            [
                one_line(&op.id, 128),
                one_line(&op.kind, 64),
                words::op_state(op.state()).to_owned(),
                op.attempts.to_string(),
                one_line(&op.worker, 64),
                duration_cell(op),
                one_line(line, MAX_CELL_CHARS),
            ]
        })
        .collect();
    let mut natural = COLUMNS.map(|header| header.chars().count());
    for row in &cells {
        for (column, cell) in row.iter().enumerate() {
            natural[column] = natural[column].max(cell.chars().count());
        }
    }
    let widths = fit_widths(natural, width);
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        // Cells are cut to their width here: comfy_table never wraps one.
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            COLUMNS
                .iter()
                .zip(widths)
                .filter_map(|(header, width)| width.map(|width| one_line(header, width))),
        );
    for row in cells {
        let mut fitted = Vec::with_capacity(row.len());
        for (cell, width) in row.into_iter().zip(widths) {
            let Some(width) = width else { continue };
            if cell.chars().count() > width || cell.ends_with('…') {
                more_to_see = true;
            }
            fitted.push(one_line(&cell, width));
        }
        table.add_row(fitted);
    }
    let mut text = String::new();
    if rows.seen > 0 {
        text.push_str(&table.to_string());
        text.push('\n');
        if rows.seen > MAX_TABLE_ROWS {
            text.push_str(&format!(
                "… and {} more ops (all of them with --output json)\n",
                rows.seen - MAX_TABLE_ROWS
            ));
        }
        if !rows.groups.is_empty() {
            let id_width = rows
                .groups
                .iter()
                .take(MAX_GROUPS_NAMED)
                .map(|group| group.id.chars().count())
                .max()
                .unwrap_or(0);
            text.push_str("foreach groups:\n");
            for group in rows.groups.iter().take(MAX_GROUPS_NAMED) {
                text.push_str(&format!("  {:<id_width$}  {}\n", group.id, group.words()));
            }
            if rows.groups.len() > MAX_GROUPS_NAMED {
                text.push_str(&format!(
                    "  … and {} more groups\n",
                    rows.groups.len() - MAX_GROUPS_NAMED
                ));
            }
        }
        if let Some(dir) = LOGS_DIR.get() {
            text.push_str(&format!(
                "each op's whole output and stderr: {}/OP.out, OP.err\n",
                dir.display()
            ));
        } else if more_to_see {
            if of_a_run {
                text.push_str(
                    "every op's whole output and stderr: --logs-dir DIR (a file each) or --output json\n",
                );
            } else {
                text.push_str(&format!(
                    "one op's whole output and stderr: volley logs {} OP\n",
                    status.batch_id
                ));
            }
        }
    }
    text.push_str(&format!(
        "batch {} ({}): {} — {} succeeded, {} failed, {} skipped, {} cancelled of {}\n",
        if status.name.is_empty() {
            "-"
        } else {
            &status.name
        },
        status.batch_id,
        words::batch_state(status.state()),
        status.succeeded,
        status.failed,
        status.skipped,
        status.cancelled,
        status.total,
    ));
    if !status.error.is_empty() {
        if let Some(reason) = status
            .error
            .strip_prefix("cancelled: ")
            .filter(|_| status.state() == BatchState::Cancelled)
        {
            text.push_str(&format!("cancelled {reason}\n"));
        } else {
            text.push_str(&format!("error: {}\n", status.error));
        }
    }
    if rows.failed_seen > 0 {
        let name_width = rows
            .failed
            .iter()
            .map(|(id, _)| id.chars().count())
            .max()
            .unwrap_or(0);
        text.push_str(&format!("failed ops ({}):\n", rows.failed_seen));
        for (id, error) in &rows.failed {
            text.push_str(&format!("  {id:<name_width$}  {error}\n"));
        }
        if rows.failed_seen > rows.failed.len() {
            text.push_str(&format!(
                "  … and {} more failed (all of them with --output json)\n",
                rows.failed_seen - rows.failed.len()
            ));
        }
        if !of_a_run {
            let first = rows.failed.first().map_or("OP", |(id, _)| id.as_str());
            text.push_str(&format!(
                "  see one in full: volley logs {} {first}\n",
                status.batch_id
            ));
        }
    }
    if rows.retried_seen > 0 {
        let more = rows.retried_seen - rows.retried.len();
        text.push_str(&format!(
            "succeeded after a retry ({}): {}{}\n",
            rows.retried_seen,
            rows.retried.join(", "),
            if more > 0 {
                format!(", … and {more} more")
            } else {
                String::new()
            }
        ));
    }
    if let Some(owner) = (!status.owner.is_empty()).then_some(&status.owner) {
        text.push_str(&format!("owned by coordinator {owner}\n"));
    }
    if !status.critical_path.is_empty() {
        let path = if status.critical_path.len() > 12 {
            let head = status.critical_path[..5].join(" → ");
            let tail = status.critical_path[status.critical_path.len() - 5..].join(" → ");
            format!(
                "{head} → … {} more … → {tail}",
                status.critical_path.len() - 10
            )
        } else {
            status.critical_path.join(" → ")
        };
        text.push_str(&format!(
            "critical path: {} ({} {}): {path}\n",
            duration(status.critical_path_ms),
            status.critical_path.len(),
            if status.critical_path.len() == 1 {
                "op"
            } else {
                "ops"
            }
        ));
    }
    // A batch that ran nothing (cancelled before any op ended, say) has no
    // speedup worth a number.
    let speedup = if status.sequential_ms > 0
        && status.wall_ms > 0
        && status.speedup.is_finite()
        && status.speedup > 0.0
    {
        format!("{:.2}x", status.speedup)
    } else {
        "—".to_owned()
    };
    text.push_str(&format!(
        "wall {} · sequential {} · speedup {speedup}\n",
        duration(status.wall_ms),
        duration(status.sequential_ms),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op_event(kind: EventKind, op: &str) -> v1::BatchEvent {
        v1::BatchEvent {
            kind: kind as i32,
            op_id: op.to_owned(),
            ..v1::BatchEvent::default()
        }
    }

    #[test]
    fn a_tally_counts_each_op_once_in_its_last_state() {
        // The sequential pass: a1 failed, b skipped; both run again and
        // succeed. Five ops in all; the bar must end at 5/5, not 7/5.
        let mut tally = Tally::default();
        for (kind, op) in [
            (EventKind::OpStarted, "a1"),
            (EventKind::OpStarted, "a2"),
            (EventKind::OpStarted, "a3"),
            (EventKind::OpSucceeded, "a2"),
            (EventKind::OpSucceeded, "a3"),
            (EventKind::OpFailed, "a1"),
            (EventKind::OpSkipped, "b"),
            (EventKind::OpSucceeded, "c"),
            (EventKind::OpRetrying, "a1"),
            (EventKind::OpRetrying, "b"),
            (EventKind::OpStarted, "a1"),
            (EventKind::OpSucceeded, "a1"),
            (EventKind::OpStarted, "b"),
            (EventKind::OpSucceeded, "b"),
            (EventKind::OpsAdded, ""),
        ] {
            tally.record(&op_event(kind, op));
        }
        assert_eq!(tally.ended(), 4 + 1);
        assert_eq!(tally.words(), "running 0 · succeeded 5 · failed 0");
        // Cancelled after a skip counts once.
        tally.record(&op_event(EventKind::OpSkipped, "d"));
        tally.record(&op_event(EventKind::OpRetrying, "d"));
        tally.record(&op_event(EventKind::OpCancelled, "d"));
        assert_eq!(tally.ended(), 6);
    }

    use serde_json::json;

    fn op(id: &str, state: OpState, details_json: &str, after: &[&str]) -> v1::OpStatus {
        v1::OpStatus {
            id: id.to_owned(),
            kind: "echo".to_owned(),
            state: state as i32,
            attempts: 2,
            worker: "local-1".to_owned(),
            started_ms: 3,
            duration_ms: 4,
            output: "line one\nline \"two\"".to_owned(),
            error: String::new(),
            details_json: details_json.to_owned(),
            after: after.iter().map(|id| (*id).to_owned()).collect(),
            group: String::new(),
        }
    }

    fn status(ops: Vec<v1::OpStatus>) -> v1::BatchStatus {
        v1::BatchStatus {
            batch_id: "0193-b".to_owned(),
            name: "nightly".to_owned(),
            state: BatchState::Failed as i32,
            wall_ms: 12,
            sequential_ms: 30,
            speedup: 2.5049,
            total: ops.len() as u32,
            succeeded: 1,
            failed: 1,
            critical_path: vec!["a".to_owned(), "b".to_owned()],
            critical_path_ms: 8,
            error: "1 failed".to_owned(),
            ops,
            ..v1::BatchStatus::default()
        }
    }

    /// What the report was when it was built as one `serde_json::Value`.
    fn as_one_value(status: &v1::BatchStatus) -> String {
        let ops: Vec<serde_json::Value> = status
            .ops
            .iter()
            .map(|op| {
                json!({
                    "id": op.id,
                    "kind": op.kind,
                    "state": words::op_state(op.state()),
                    "attempts": op.attempts,
                    "worker": op.worker,
                    "started_ms": op.started_ms,
                    "duration_ms": op.duration_ms,
                    "output": op.output,
                    "error": op.error,
                    "details": serde_json::from_str::<serde_json::Value>(&op.details_json).unwrap_or(serde_json::Value::Null),
                    "after": op.after,
                })
            })
            .collect();
        let document = json!({
            "batch_id": status.batch_id,
            "name": status.name,
            "state": words::batch_state(status.state()),
            "wall_ms": status.wall_ms,
            "sequential_ms": status.sequential_ms,
            "speedup": (status.speedup * 100.0).round() / 100.0,
            "critical_path": status.critical_path,
            "critical_path_ms": status.critical_path_ms,
            "total": status.total,
            "succeeded": status.succeeded,
            "failed": status.failed,
            "skipped": status.skipped,
            "cancelled": status.cancelled,
            "error": status.error,
            "owner": status.owner,
            "ops": ops,
        });
        serde_json::to_string_pretty(&document).expect("serializes") + "\n"
    }

    fn streamed(status: &v1::BatchStatus) -> String {
        let mut out = Vec::new();
        let mut writer = JsonReportWriter::begin(&mut out, status).expect("writes");
        for op in &status.ops {
            writer.op(op).expect("writes");
        }
        writer.finish(status).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn table_rows_put_failures_first_only_when_cut() {
        let state_of = |index: usize| {
            if index % 7 == 3 {
                OpState::Failed
            } else {
                OpState::Succeeded
            }
        };
        for count in [0, 5, MAX_TABLE_ROWS, MAX_TABLE_ROWS + 1, 3 * MAX_TABLE_ROWS] {
            let ops: Vec<v1::OpStatus> = (0..count)
                .map(|index| op(&format!("op-{index}"), state_of(index), "", &[]))
                .collect();
            // What the table showed when it had every op at once.
            let mut expected: Vec<&v1::OpStatus> = ops.iter().collect();
            if expected.len() > MAX_TABLE_ROWS {
                expected.sort_by_key(|op| op.state() == OpState::Succeeded);
            }
            expected.truncate(MAX_TABLE_ROWS);
            let mut rows = TableRows::default();
            for op in ops.iter().cloned() {
                rows.push(op);
            }
            let chosen: Vec<&str> = rows.chosen().iter().map(|op| op.id.as_str()).collect();
            let expected: Vec<&str> = expected.iter().map(|op| op.id.as_str()).collect();
            assert_eq!(chosen, expected, "{count} ops");
        }
    }

    #[test]
    fn streamed_json_report_is_byte_for_byte_the_old_document() {
        let full = status(vec![
            op("a", OpState::Succeeded, "", &[]),
            op(
                "b",
                OpState::Failed,
                r#"{"exit_code":1,"stderr":"x\ny","nested":{"list":[1,2]}}"#,
                &["a"],
            ),
            op("c", OpState::Skipped, "not json", &["a", "b"]),
        ]);
        assert_eq!(streamed(&full), as_one_value(&full));
        let empty = status(Vec::new());
        assert_eq!(streamed(&empty), as_one_value(&empty));
        let mut no_path = status(vec![op("a", OpState::Succeeded, "{}", &[])]);
        no_path.critical_path.clear();
        no_path.speedup = f64::NAN;
        assert_eq!(streamed(&no_path), as_one_value(&no_path));
    }

    fn failing_op(id: &str, error: &str) -> v1::OpStatus {
        v1::OpStatus {
            error: error.to_owned(),
            output: String::new(),
            ..op(id, OpState::Failed, "", &[])
        }
    }

    #[test]
    fn a_report_fits_eighty_columns_and_names_its_failed_ops() {
        let mut rows = TableRows::default();
        let mut ops = vec![op(
            "build-the-whole-workspace",
            OpState::Succeeded,
            r#"{"stderr":"warn\n"}"#,
            &[],
        )];
        ops[0].output = "x".repeat(300);
        for index in 0..12 {
            ops.push(failing_op(
                &format!("test-{index}"),
                &format!("sh exited with code 1: suite {index}\ttab\u{1b}[31mred\nsecond line"),
            ));
        }
        for op in ops.iter().cloned() {
            rows.push(op);
        }
        let text = report_text_within(&status(ops), &rows, Some(80));
        for line in text.lines() {
            assert!(!line.contains('\u{1b}'), "{line:?}");
        }
        // The table fits; the summary lines are what they are.
        for line in text
            .lines()
            .filter(|line| line.starts_with(['┌', '│', '╞', '└']))
        {
            assert!(line.chars().count() <= 80, "{line:?}\n{text}");
        }
        assert!(text.contains("│ build-the-whol…   echo "), "{text}");
        assert!(
            text.contains("one op's whole output and stderr: volley logs 0193-b OP\n"),
            "{text}"
        );
        let closing: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("failed ops"))
            .collect();
        assert_eq!(closing[0], "failed ops (12):");
        assert_eq!(
            closing[1],
            "  test-0  sh exited with code 1: suite 0 tab[31mred"
        );
        assert_eq!(
            closing[10],
            "  test-9  sh exited with code 1: suite 9 tab[31mred"
        );
        assert_eq!(
            closing[11],
            "  … and 2 more failed (all of them with --output json)"
        );
        assert_eq!(closing[12], "  see one in full: volley logs 0193-b test-0");
    }

    #[test]
    fn foreach_groups_are_summed_up_under_the_table_and_named_in_json() {
        let mut ops = Vec::new();
        for index in 0..5 {
            let mut member = if index == 3 {
                failing_op(&format!("test-{index}"), "sh exited with code 1")
            } else {
                op(&format!("test-{index}"), OpState::Succeeded, "", &[])
            };
            member.group = "test".to_owned();
            ops.push(member);
        }
        let mut lint = op("lint-a", OpState::Skipped, "", &[]);
        lint.group = "lint".to_owned();
        ops.push(lint);
        ops.push(op("sum", OpState::Succeeded, "", &[]));
        let mut rows = TableRows::default();
        for op in ops.iter().cloned() {
            rows.push(op);
        }
        let text = report_text_within(&status(ops.clone()), &rows, Some(80));
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|line| *line == "foreach groups:")
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(lines[at + 1], "  test  5 ops: 4 succeeded, 1 failed");
        assert_eq!(lines[at + 2], "  lint  1 op: 1 skipped");
        let json = streamed(&status(ops));
        let value: serde_json::Value = serde_json::from_str(&json).expect("the report is JSON");
        assert_eq!(value["ops"][0]["group"], "test");
        assert!(value["ops"][6].get("group").is_none(), "{json}");
    }

    #[test]
    fn ops_that_needed_a_retry_are_named_under_the_summary() {
        let mut rows = TableRows::default();
        let mut ops = Vec::new();
        for index in 0..13 {
            let mut op = op(&format!("cmd-{index}"), OpState::Succeeded, "", &[]);
            op.attempts = if index % 2 == 0 { 2 } else { 1 };
            ops.push(op);
        }
        for op in ops.iter().cloned() {
            rows.push(op);
        }
        let text = report_text_within(&status(ops), &rows, Some(80));
        assert!(
            text.contains(
                "succeeded after a retry (7): cmd-0, cmd-2, cmd-4, cmd-6, cmd-8, cmd-10, cmd-12\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_cancelled_batch_that_ran_nothing_has_no_speedup_or_durations() {
        let cancelled = v1::OpStatus {
            attempts: 0,
            duration_ms: 0,
            error: "cancelled: by token t1".to_owned(),
            ..op("hold", OpState::Cancelled, "", &[])
        };
        let mut rows = TableRows::default();
        rows.push(cancelled.clone());
        let mut batch = status(vec![cancelled]);
        batch.state = BatchState::Cancelled as i32;
        batch.error = "cancelled: by token t1".to_owned();
        batch.wall_ms = 0;
        batch.sequential_ms = 0;
        batch.speedup = 0.0;
        batch.critical_path.clear();
        let text = report_text_within(&batch, &rows, None);
        assert!(text.contains("\ncancelled by token t1\n"), "{text}");
        assert!(!text.contains("cancelled: "), "{text}");
        assert!(
            text.ends_with("wall 0ms · sequential 0ms · speedup —\n"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|line| line.starts_with("│ hold"))
            .expect("row");
        assert!(row.contains(" — ") && !row.contains("0ms"), "{row}");
    }

    #[test]
    fn widths_fit_or_give_the_output_column_the_room() {
        let natural = [25, 5, 9, 5, 8, 6, 80];
        assert_eq!(fit_widths(natural, None), natural.map(Some));
        assert_eq!(fit_widths(natural, Some(200)), natural.map(Some));
        let fitted = fit_widths(natural, Some(80));
        assert_eq!(fitted[WORKER_COLUMN], None, "{fitted:?}");
        let shown = fitted.iter().flatten().count();
        assert!(
            fitted.iter().flatten().sum::<usize>() + table_overhead(shown) <= 80,
            "{fitted:?}"
        );
        assert!(fitted[OUTPUT_COLUMN] >= Some(24), "{fitted:?}");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
        assert_eq!(one_line("a\tb\rc", 10), "a bc");
    }
}
