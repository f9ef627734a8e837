//! How a batch looks to a person: progress while it runs (a bar on a TTY,
//! plain event lines otherwise, both on stderr), then the report on stdout
//! (a table and the timing lines, or one JSON document).

use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use volley_client::ClientError;
use volley_client::v1::{self, BatchState, EventKind, OpState};

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

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let mut shown: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
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

/// Prints the report to stdout.
pub fn report(status: &v1::BatchStatus, format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let document = report_json(status);
            println!(
                "{}",
                serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".into())
            );
        }
        OutputFormat::Table => print!("{}", report_text(status)),
    }
}

pub fn report_json(status: &v1::BatchStatus) -> serde_json::Value {
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
    json!({
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
    })
}

pub fn report_text(status: &v1::BatchStatus) -> String {
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
    // Failures first when the table must be cut: they are what one looks for.
    let mut rows: Vec<&v1::OpStatus> = status.ops.iter().collect();
    if rows.len() > MAX_TABLE_ROWS {
        rows.sort_by_key(|op| op.state() == OpState::Succeeded);
    }
    for op in rows.iter().take(MAX_TABLE_ROWS) {
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
    if !status.ops.is_empty() {
        text.push_str(&table.to_string());
        text.push('\n');
        if status.ops.len() > MAX_TABLE_ROWS {
            text.push_str(&format!(
                "… and {} more ops (all of them with --output json)\n",
                status.ops.len() - MAX_TABLE_ROWS
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
