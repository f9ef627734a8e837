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

use super::commands::OutputFormat;

/// At most this many rows in the table; the rest are summarised (all of
/// them are in `--output json`).
const MAX_TABLE_ROWS: usize = 200;

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
    let (mut running, mut succeeded, mut failed, mut other) = (0u32, 0u32, 0u32, 0u32);
    let mut last_seq = 0;
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let event = event?;
        last_seq = event.seq;
        match event.kind() {
            EventKind::OpStarted => running += 1,
            EventKind::OpSucceeded => {
                running = running.saturating_sub(1);
                succeeded += 1;
            }
            EventKind::OpFailed => {
                running = running.saturating_sub(1);
                failed += 1;
            }
            EventKind::OpRetrying => running = running.saturating_sub(1),
            EventKind::OpSkipped | EventKind::OpCancelled => other += 1,
            EventKind::OpsAdded => {
                // "N ops added": the batch grew while it ran.
                let added = event
                    .message
                    .split_whitespace()
                    .next()
                    .and_then(|count| count.parse::<u64>().ok());
                if let (Some(bar), Some(added)) = (&bar, added) {
                    bar.inc_length(added);
                }
            }
            _ => {}
        }
        if let Some(bar) = &bar {
            bar.set_position(u64::from(succeeded + failed + other));
            bar.set_message(format!(
                "running {running} · succeeded {succeeded} · failed {failed}"
            ));
        } else if plain_lines {
            eprintln!("{}", event_line(&event));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(last_seq)
}

fn event_line(event: &v1::BatchEvent) -> String {
    let what = match event.kind() {
        EventKind::BatchSubmitted => "batch submitted".to_owned(),
        EventKind::OpStarted => format!("started   {} (attempt {})", event.op_id, event.attempt),
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
            format!("cancelled {}: {}", event.op_id, first_line(&event.message))
        }
        EventKind::BatchFinished => format!("batch {}", state_word(event.batch_state())),
        EventKind::OpsAdded => format!(
            "grew     {} (by {})",
            event.message,
            if event.op_id.is_empty() {
                "a client"
            } else {
                &event.op_id
            }
        ),
        EventKind::OpBlocked => {
            format!("blocked   {}: {}", event.op_id, first_line(&event.message))
        }
        EventKind::Unspecified => "event".to_owned(),
    };
    format!("[{:>5}] {what}", event.seq)
}

pub fn state_word(state: BatchState) -> &'static str {
    match state {
        BatchState::Unspecified => "unknown",
        BatchState::Running => "running",
        BatchState::Succeeded => "succeeded",
        BatchState::Failed => "failed",
        BatchState::Cancelled => "cancelled",
        BatchState::Lost => "lost",
    }
}

pub fn op_state_word(state: OpState) -> &'static str {
    match state {
        OpState::Unspecified => "unknown",
        OpState::Waiting => "waiting",
        OpState::Ready => "ready",
        OpState::Running => "running",
        OpState::Succeeded => "succeeded",
        OpState::Failed => "failed",
        OpState::Skipped => "skipped",
        OpState::Cancelled => "cancelled",
    }
}

/// The most characters of a message an event line shows: room for a lost
/// worker's error with its name, time and retry count.
const EVENT_MESSAGE_CHARS: usize = 160;

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let mut shown: String = line.chars().take(EVENT_MESSAGE_CHARS).collect();
    if line.chars().count() > EVENT_MESSAGE_CHARS {
        shown.push('…');
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
    loop {
        let got = ops.len() as u32;
        next = next.saturating_add(got);
        for op in ops {
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
}

impl TableRows {
    pub fn push(&mut self, op: v1::OpStatus) {
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
            id: &op.id,
            kind: &op.kind,
            output: &op.output,
            started_ms: op.started_ms,
            state: op_state_word(op.state()),
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
        self.field("state", state_word(status.state()))?;
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

/// The table of `rows` and the batch's summary lines.
pub fn report_text(status: &v1::BatchStatus, rows: &TableRows) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "op",
            "kind",
            "state",
            "attempts",
            "worker",
            "duration",
            "output / error",
        ]);
    for op in rows.chosen() {
        let text = if op.error.is_empty() {
            first_line(&op.output)
        } else {
            first_line(&op.error)
        };
        table.add_row(vec![
            op.id.clone(),
            op.kind.clone(),
            op_state_word(op.state()).to_owned(),
            op.attempts.to_string(),
            op.worker.clone(),
            duration(op.duration_ms),
            text,
        ]);
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
    }
    text.push_str(&format!(
        "batch {} ({}): {} — {} succeeded, {} failed, {} skipped, {} cancelled of {}\n",
        if status.name.is_empty() {
            "-"
        } else {
            &status.name
        },
        status.batch_id,
        state_word(status.state()),
        status.succeeded,
        status.failed,
        status.skipped,
        status.cancelled,
        status.total,
    ));
    if !status.error.is_empty() {
        text.push_str(&format!("error: {}\n", status.error));
    }
    if !status.owner.is_empty() {
        text.push_str(&format!("owned by coordinator {}\n", status.owner));
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
            "critical path: {} ({} ops): {path}\n",
            duration(status.critical_path_ms),
            status.critical_path.len()
        ));
    }
    text.push_str(&format!(
        "wall {} · sequential {} · speedup {:.2}x\n",
        duration(status.wall_ms),
        duration(status.sequential_ms),
        status.speedup
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    "state": op_state_word(op.state()),
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
            "state": state_word(status.state()),
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
}
