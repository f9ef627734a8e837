//! The results: ratios, the tables (terminal and Markdown), `latest.json`, and the README's results section.

use std::path::Path;

use anyhow::{Context, bail};
use comfy_table::{CellAlignment, Table, presets};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::machine::Machine;
use crate::record::{REDIS_CEILING, Record, VOLLEY, VOLLEY_EMBEDDED, round};
use crate::workloads::Sizes;

pub const README_START: &str = "<!-- results:start -->";
pub const README_END: &str = "<!-- results:end -->";

/// Rows are shown in this order; systems not listed come after, by name.
const SYSTEM_ORDER: [&str; 6] = [
    VOLLEY,
    VOLLEY_EMBEDDED,
    "dask",
    "celery",
    "ray",
    REDIS_CEILING,
];
const WORKLOAD_ORDER: [&str; 6] = ["W1", "W2", "W3", "W4", "W5", "W6"];

/// Everything one run measured: what `latest.json` holds.
#[derive(Debug, Serialize)]
pub struct Results {
    pub schema: u32,
    /// `full` or `smoke`.
    pub mode: String,
    pub machine: Machine,
    pub peer_versions: Map<String, Value>,
    pub sizes: Sizes,
    pub cluster: ClusterShape,
    pub records: Vec<Record>,
    pub ratios: Vec<Ratio>,
    /// What was skipped, and why.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterShape {
    pub workers: usize,
    pub slots: u32,
    pub retention_flag: Option<String>,
}

/// Volley (the cluster) against another row of the same workload.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Ratio {
    pub workload: String,
    pub versus: String,
    /// `ops_per_s` (W1–W3, and W1–W3 against the W5 ceiling) or `p50_ms` (W4).
    pub metric: String,
    /// Volley's value ÷ the other's.
    pub volley_over_other: f64,
    /// How many times faster Volley is (below 1: slower): the ratio for
    /// throughput, its inverse for latency.
    pub volley_faster_by: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Volley cluster ÷ every other system, per workload; W1–W3 also ÷ the
/// W5 ceiling.
pub fn ratios(records: &[Record]) -> Vec<Ratio> {
    let mut ratios = Vec::new();
    let find = |system: &str, workload: &str| {
        records
            .iter()
            .find(|record| record.system == system && record.workload == workload && record.is_ok())
    };
    for workload in ["W1", "W2", "W3", "W4"] {
        let Some(volley) = find(VOLLEY, workload) else {
            continue;
        };
        for other in records.iter().filter(|record| {
            record.workload == workload && record.system != VOLLEY && record.is_ok()
        }) {
            let ratio = if workload == "W4" {
                match (volley.p50_ms, other.p50_ms) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        Some(("p50_ms", ours / theirs, theirs / ours))
                    }
                    _ => None,
                }
            } else {
                match (volley.ops_per_s, other.ops_per_s) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        Some(("ops_per_s", ours / theirs, ours / theirs))
                    }
                    _ => None,
                }
            };
            if let Some((metric, over, faster)) = ratio {
                ratios.push(Ratio {
                    workload: workload.to_owned(),
                    versus: other.system.clone(),
                    metric: metric.to_owned(),
                    volley_over_other: round(over, 4),
                    volley_faster_by: round(faster, 4),
                    note: None,
                });
            }
        }
        // The ceiling is the best W5 run (the largest slice, normally).
        let ceiling = records
            .iter()
            .filter(|record| record.system == REDIS_CEILING && record.is_ok())
            .filter_map(|record| record.ops_per_s.map(|rate| (rate, record.get_u64("slice"))))
            .max_by(|left, right| left.0.total_cmp(&right.0));
        if workload != "W4"
            && let (Some(ours), Some((ceiling, slice))) = (volley.ops_per_s, ceiling)
            && ceiling > 0.0
        {
            ratios.push(Ratio {
                workload: workload.to_owned(),
                versus: REDIS_CEILING.to_owned(),
                metric: "ops_per_s".to_owned(),
                volley_over_other: round(ours / ceiling, 4),
                volley_faster_by: round(ours / ceiling, 4),
                note: slice.map(|slice| format!("ceiling: slices of {slice} completions per call")),
            });
        }
    }
    ratios
}

fn rank(order: &[&str], name: &str) -> usize {
    order
        .iter()
        .position(|candidate| *candidate == name)
        .unwrap_or(order.len())
}

/// Records in table order: workload, then system.
pub fn sorted(records: &[Record]) -> Vec<&Record> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|left, right| {
        (rank(&WORKLOAD_ORDER, &left.workload), &left.workload)
            .cmp(&(rank(&WORKLOAD_ORDER, &right.workload), &right.workload))
            .then_with(|| {
                (rank(&SYSTEM_ORDER, &left.system), &left.system)
                    .cmp(&(rank(&SYSTEM_ORDER, &right.system), &right.system))
            })
            .then_with(|| left.ops.cmp(&right.ops))
    });
    sorted
}

/// `12345.6` → `12,346`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i128;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |value| format!("{value:.digits$}"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "—".to_owned(),
        |kib| format!("{:.0}", kib as f64 / 1024.0),
    )
}

fn bytes_mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_owned(),
        |bytes| format!("{:.1}", bytes as f64 / 1048576.0),
    )
}

/// A row's system as shown: W5 rows say their slice.
fn display_system(record: &Record) -> String {
    match record.get_u64("slice") {
        Some(slice) => format!("{}, slice {slice}", record.system),
        None => record.system.clone(),
    }
}

/// The main table (W1–W5): header and rows as text.
pub fn main_rows(records: &[Record], ratios: &[Ratio]) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "Workload",
        "System",
        "Ops",
        "ops/s",
        "CPU µs/op",
        "p50 ms",
        "p90 ms",
        "Volley vs this",
    ]
    .map(str::to_owned)
    .to_vec();
    let rows = sorted(records)
        .into_iter()
        .filter(|record| record.workload != "W6")
        .map(|record| {
            let versus = ratios
                .iter()
                .find(|ratio| ratio.workload == record.workload && ratio.versus == record.system)
                .map_or_else(String::new, |ratio| {
                    if record.system == REDIS_CEILING {
                        format!("{:.1}% of ceiling", ratio.volley_over_other * 100.0)
                    } else if ratio.volley_faster_by >= 1.0 {
                        format!("{:.2}× faster", ratio.volley_faster_by)
                    } else {
                        format!("{:.2}× slower", 1.0 / ratio.volley_faster_by)
                    }
                });
            if let Some(error) = &record.error {
                let mut row = vec![record.workload.clone(), display_system(record)];
                row.push(String::new());
                row.push("error".to_owned());
                row.extend(std::iter::repeat_n(String::new(), 3));
                row.push(shorten(error, 60));
                return row;
            }
            vec![
                record.workload.clone(),
                display_system(record),
                record
                    .ops
                    .map_or_else(String::new, |ops| thousands(ops as f64)),
                record.ops_per_s.map_or_else(|| "—".to_owned(), thousands),
                opt(record.cpu_us_per_op, 1),
                opt(record.p50_ms, 2),
                opt(record.p90_ms, 2),
                versus,
            ]
        })
        .collect();
    (header, rows)
}

/// The W5 ceiling row against each Volley workload, for the table's
/// footer ("Volley W1 = x% of the ceiling").
pub fn ceiling_lines(ratios: &[Ratio]) -> Vec<String> {
    ratios
        .iter()
        .filter(|ratio| ratio.versus == REDIS_CEILING)
        .map(|ratio| {
            format!(
                "Volley {} ops/s ÷ Redis ceiling (W5) = {:.1}%{}",
                ratio.workload,
                ratio.volley_over_other * 100.0,
                ratio
                    .note
                    .as_ref()
                    .map_or_else(String::new, |note| format!(" ({note})"))
            )
        })
        .collect()
}

/// The W6 table: scale, peak RSS per process, Redis memory.
pub fn scale_rows(records: &[Record]) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "Ops",
        "wall s",
        "ops/s",
        "CPU µs/op",
        "RSS MiB coord",
        "RSS MiB w1",
        "RSS MiB w2",
        "RSS MiB redis",
        "Redis MiB before",
        "at finish",
        "after retention",
        "Redis B/op",
    ]
    .map(str::to_owned)
    .to_vec();
    let rows = sorted(records)
        .into_iter()
        .filter(|record| record.workload == "W6")
        .map(|record| {
            if let Some(error) = &record.error {
                let mut row = vec![
                    record
                        .ops
                        .map_or_else(String::new, |ops| thousands(ops as f64)),
                    "error".to_owned(),
                ];
                row.push(shorten(error, 60));
                row.extend(std::iter::repeat_n(String::new(), 9));
                return row;
            }
            let rss = |name: &str| {
                record
                    .extra
                    .get("peak_rss_kib")
                    .and_then(|map| map.get(name))
                    .and_then(Value::as_u64)
            };
            let before = record.get_u64("redis_used_memory_before");
            let finish = record.get_u64("redis_used_memory_finish");
            let per_op = match (before, finish, record.ops) {
                (Some(before), Some(finish), Some(ops)) if ops > 0 => {
                    thousands(finish.saturating_sub(before) as f64 / ops as f64)
                }
                _ => "—".to_owned(),
            };
            vec![
                record
                    .ops
                    .map_or_else(String::new, |ops| thousands(ops as f64)),
                opt(record.wall_s, 2),
                record.ops_per_s.map_or_else(|| "—".to_owned(), thousands),
                opt(record.cpu_us_per_op, 1),
                mib(rss("coordinator")),
                mib(rss("worker w1")),
                mib(rss("worker w2")),
                mib(rss("redis-server")),
                bytes_mib(before),
                bytes_mib(finish),
                bytes_mib(record.get_u64("redis_used_memory_after_retention")),
                per_op,
            ]
        })
        .collect();
    (header, rows)
}

/// One line on W6's linearity: the per-op costs across sizes (flat
/// ranges mean cost grows linearly with the batch).
pub fn scale_summary(records: &[Record]) -> Option<String> {
    let runs: Vec<&Record> = sorted(records)
        .into_iter()
        .filter(|record| record.workload == "W6" && record.is_ok())
        .collect();
    if runs.len() < 2 {
        return None;
    }
    let range = |values: Vec<f64>, digits: usize| -> String {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{low:.digits$}–{high:.digits$}")
    };
    let per_op = |record: &Record, value: Option<u64>, base: u64| {
        Some(value?.saturating_sub(base) as f64 / record.ops? as f64)
    };
    let cpu: Vec<f64> = runs
        .iter()
        .filter_map(|record| record.cpu_us_per_op)
        .collect();
    let wall: Vec<f64> = runs
        .iter()
        .filter_map(|record| Some(record.wall_s? * 1e6 / record.ops? as f64))
        .collect();
    let redis: Vec<f64> = runs
        .iter()
        .filter_map(|record| {
            let before = record.get_u64("redis_used_memory_before")?;
            per_op(record, record.get_u64("redis_used_memory_finish"), before)
        })
        .collect();
    let coordinator: Vec<f64> = runs
        .iter()
        .filter_map(|record| {
            let kib = record
                .extra
                .get("peak_rss_kib")?
                .get("coordinator")?
                .as_u64()?;
            per_op(record, Some(kib * 1024), 0)
        })
        .collect();
    Some(format!(
        "W6 per op across {} sizes: wall {} µs, CPU {} µs, Redis used_memory {} B, coordinator peak RSS {} B",
        runs.len(),
        range(wall, 1),
        range(cpu, 1),
        range(redis, 0),
        range(coordinator, 0)
    ))
}

fn shorten(text: &str, limit: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.chars().count() <= limit {
        return first_line.to_owned();
    }
    let cut: String = first_line.chars().take(limit).collect();
    format!("{cut}…")
}

/// A table for the terminal; columns from `left_columns` on are numbers,
/// right-aligned.
pub fn terminal_table(header: &[String], rows: &[Vec<String>], left_columns: usize) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row.clone());
    }
    for index in left_columns..header.len() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

/// A GitHub Markdown table (numbers right-aligned).
pub fn markdown_table(header: &[String], rows: &[Vec<String>], left_columns: usize) -> String {
    let escape = |cell: &str| cell.replace('|', "\\|");
    let mut out = format!(
        "| {} |\n",
        header
            .iter()
            .map(|cell| escape(cell))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let rule: Vec<&str> = (0..header.len())
        .map(|index| if index < left_columns { "---" } else { "---:" })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in rows {
        out.push_str(&format!(
            "| {} |\n",
            row.iter()
                .map(|cell| escape(cell))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    out
}

/// Every error, one per line, for the end of the output.
pub fn error_lines(records: &[Record]) -> Vec<String> {
    sorted(records)
        .into_iter()
        .filter_map(|record| {
            let error = record.error.as_ref()?;
            let ops = record.ops.map_or_else(String::new, |ops| {
                format!(" ({} ops)", thousands(ops as f64))
            });
            Some(format!(
                "{} {}{ops}: {error}",
                record.workload, record.system
            ))
        })
        .collect()
}

/// The README's results section: machine, main table, ceiling, scale.
pub fn readme_section(results: &Results) -> String {
    let (header, rows) = main_rows(&results.records, &results.ratios);
    let mut out = format!(
        "Machine: {}. Cluster: one coordinator and {} workers × {} slots, redis-server {}.\n\n",
        results.machine.summary(),
        results.cluster.workers,
        results.cluster.slots,
        redis_version_short(&results.machine.redis_version)
    );
    if !results.peer_versions.is_empty() {
        let versions: Vec<String> = results
            .peer_versions
            .iter()
            .map(|(name, version)| format!("{name} {}", version.as_str().unwrap_or("?")))
            .collect();
        out.push_str(&format!("Peers: {}.\n\n", versions.join(", ")));
    }
    out.push_str(&markdown_table(&header, &rows, 2));
    out.push_str(
        "\n\"Volley vs this\": the Volley cluster's ops/s (W1–W3) or p50 (W4) against the row's.\n",
    );
    let ceiling = ceiling_lines(&results.ratios);
    if !ceiling.is_empty() {
        out.push('\n');
        for line in ceiling {
            out.push_str(&format!("- {line}\n"));
        }
    }
    let (scale_header, scale_rows) = scale_rows(&results.records);
    if !scale_rows.is_empty() {
        out.push_str("\nW6, scale (a fresh cluster per size):\n\n");
        out.push_str(&markdown_table(&scale_header, &scale_rows, 0));
        if let Some(line) = scale_summary(&results.records) {
            out.push_str(&format!("\n{line}.\n"));
        }
    }
    let errors = error_lines(&results.records);
    if !errors.is_empty() {
        out.push_str("\nErrors:\n\n");
        for line in errors {
            out.push_str(&format!("- {}\n", line.replace('\n', " ")));
        }
    }
    out.push_str("\n![ops/s per workload and system; W4 p50](results/latest.png)\n");
    out
}

fn redis_version_short(full: &str) -> String {
    full.split_whitespace()
        .find_map(|part| part.strip_prefix("v="))
        .unwrap_or(full)
        .to_owned()
}

/// Replaces what is between the markers in `text` with `section`.
pub fn replace_section(text: &str, section: &str) -> anyhow::Result<String> {
    let Some(start) = text.find(README_START) else {
        bail!("no `{README_START}` marker");
    };
    let after_start = start + README_START.len();
    let Some(end_offset) = text[after_start..].find(README_END) else {
        bail!("no `{README_END}` marker after `{README_START}`");
    };
    let end = after_start + end_offset;
    Ok(format!(
        "{}\n{}{}",
        &text[..after_start],
        section.trim_end_matches('\n').to_owned() + "\n",
        &text[end..]
    ))
}

pub fn rewrite_readme(path: &Path, section: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let updated =
        replace_section(&text, section).with_context(|| format!("in {}", path.display()))?;
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

pub fn write_json(path: &Path, results: &Results) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(results).context("encoding the results")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(system: &str, workload: &str, ops_per_s: Option<f64>, p50: Option<f64>) -> Record {
        Record {
            system: system.to_owned(),
            workload: workload.to_owned(),
            ops: Some(100),
            ops_per_s,
            p50_ms: p50,
            ..Record::default()
        }
    }

    #[test]
    fn ratios_compare_volley_with_each_row() {
        let records = vec![
            record(VOLLEY, "W1", Some(10_000.0), None),
            record("dask", "W1", Some(2_500.0), None),
            record(REDIS_CEILING, "W5", Some(40_000.0), None),
            record(VOLLEY, "W4", None, Some(2.0)),
            record("celery", "W4", None, Some(1.0)),
            Record {
                error: Some("boom".to_owned()),
                ..record("ray", "W1", None, None)
            },
        ];
        let ratios = ratios(&records);
        let dask = ratios
            .iter()
            .find(|ratio| ratio.versus == "dask")
            .expect("dask");
        assert_eq!(dask.volley_faster_by, 4.0);
        let ceiling = ratios
            .iter()
            .find(|ratio| ratio.versus == REDIS_CEILING)
            .expect("ceiling");
        assert_eq!(ceiling.volley_over_other, 0.25);
        let celery = ratios
            .iter()
            .find(|ratio| ratio.versus == "celery")
            .expect("celery");
        assert_eq!(celery.metric, "p50_ms");
        assert_eq!(celery.volley_over_other, 2.0);
        assert_eq!(celery.volley_faster_by, 0.5);
        assert!(ratios.iter().all(|ratio| ratio.versus != "ray"));
    }

    #[test]
    fn the_section_between_the_markers_is_replaced_and_the_rest_kept() {
        let text = format!("# Bench\nintro\n{README_START}\nold table\n{README_END}\nafter\n");
        let updated = replace_section(&text, "new table\n").expect("markers");
        assert_eq!(
            updated,
            format!("# Bench\nintro\n{README_START}\nnew table\n{README_END}\nafter\n")
        );
        assert!(replace_section("no markers", "x").is_err());
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(12.0), "12");
    }

    #[test]
    fn tables_put_rows_in_workload_then_system_order() {
        let records = vec![
            record("dask", "W1", Some(1.0), None),
            record(VOLLEY, "W2", Some(1.0), None),
            record(VOLLEY, "W1", Some(2.0), None),
        ];
        let (_, rows) = main_rows(&records, &ratios(&records));
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|row| (row[0].as_str(), row[1].as_str()))
            .collect();
        assert_eq!(order, vec![("W1", VOLLEY), ("W1", "dask"), ("W2", VOLLEY)]);
        let markdown = markdown_table(
            &["a".to_owned(), "b".to_owned()],
            &[vec!["x|y".to_owned(), "1".to_owned()]],
            1,
        );
        assert_eq!(markdown, "| a | b |\n| --- | ---: |\n| x\\|y | 1 |\n");
    }
}
