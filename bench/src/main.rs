//! `volley-bench`: the benchmark harness behind `bench/run`. Starts its own
//! redis-server, a Volley cluster (one coordinator, two worker processes)
//! and embedded Volley; runs the same workloads on each (and, through
//! `bench/peers/`, on Dask, Celery and Ray); measures the Redis ceiling and
//! scale to a million ops; prints a table and writes `latest.json`, a PNG
//! chart and the results section of `bench/README.md`. Nothing here
//! asserts a number: the run fails only when something does not work.
//!
//! # Layout
//! - [`cluster`] — redis-server, `volley coordinator`, `volley worker`s as child processes.
//! - [`workloads`] — W1–W4 and W6 as batches; running one through the client SDK.
//! - [`embedded`] — the same batches through `volley run`.
//! - [`ceiling`] — W5: redis-benchmark of a completion-shaped Lua script.
//! - [`peers`] — Dask, Celery and Ray via `bench/peers/run_all.sh`.
//! - [`procs`] — CPU time and peak RSS from `/proc`.
//! - [`record`] — one result line, shared with the peers' output.
//! - [`report`] — ratios, tables, `latest.json`, the README section.
//! - [`chart`] — the PNG.
//! - [`machine`] — what the numbers were measured on.

// A harness whose job is printing a table.
#![allow(clippy::print_stdout)]

mod ceiling;
mod chart;
mod cluster;
mod embedded;
mod machine;
mod peers;
mod procs;
mod record;
mod report;
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;

use crate::cluster::{Cluster, ClusterOptions};
use crate::embedded::Embedded;
use crate::machine::Machine;
use crate::record::{REDIS_CEILING, Record, VOLLEY, VOLLEY_EMBEDDED, percentile_ms, round};
use crate::report::{ClusterShape, Results};
use crate::workloads::{BatchRun, Sizes, rss_json};

const ALL_WORKLOADS: [&str; 6] = ["W1", "W2", "W3", "W4", "W5", "W6"];

/// Run the Volley benchmarks (see bench/README.md).
#[derive(Parser, Debug)]
#[command(name = "volley-bench", version)]
struct Args {
    /// Tiny sizes, no peers, results under target/bench-smoke, README
    /// untouched: what CI runs so the harness never rots.
    #[arg(long, env = "VOLLEY_BENCH_SMOKE")]
    smoke: bool,
    /// Skip Dask, Celery and Ray.
    #[arg(long, env = "VOLLEY_BENCH_NO_PEERS")]
    no_peers: bool,
    /// Only these workloads, comma-separated (W1..W6).
    #[arg(
        long,
        env = "VOLLEY_BENCH_ONLY",
        value_delimiter = ',',
        default_value = "W1,W2,W3,W4,W5,W6"
    )]
    only: Vec<String>,
    /// The `volley` binary to measure.
    #[arg(
        long,
        env = "VOLLEY_BENCH_VOLLEY_BIN",
        default_value = "target/release/volley"
    )]
    volley_bin: PathBuf,
    /// The repository root: bench/peers, bench/results and bench/README.md
    /// are found from here.
    #[arg(long, env = "VOLLEY_BENCH_REPO", default_value = ".")]
    repo: PathBuf,
    /// Where latest.json and latest.png go (default: bench/results; with
    /// --smoke, target/bench-smoke; with --only, target/bench-partial).
    #[arg(long, env = "VOLLEY_BENCH_RESULTS_DIR")]
    results_dir: Option<PathBuf>,
    /// Worker processes of the cluster (and workers of `volley run`).
    #[arg(long, env = "VOLLEY_BENCH_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Slots of each worker.
    #[arg(long, env = "VOLLEY_BENCH_SLOTS", default_value_t = 64)]
    slots: u32,
}

/// Bounds: a run that takes longer is an error, never a hang.
struct Timeouts {
    batch: Duration,
    round_trips: Duration,
    ceiling: Duration,
    scale: Duration,
}

const TIMEOUTS: Timeouts = Timeouts {
    batch: Duration::from_secs(180),
    round_trips: Duration::from_secs(120),
    ceiling: Duration::from_secs(120),
    // The brief's bound on the million-op run.
    scale: Duration::from_secs(300),
};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // When a signal wins, `run` is dropped: every child it started is
    // killed (kill_on_drop, RedisServer's Drop, the peers' group guard).
    tokio::select! {
        outcome = run(args) => match outcome {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("volley-bench: some Volley workload failed (see the errors above)");
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("volley-bench: error: {error:#}");
                ExitCode::FAILURE
            }
        },
        signal = shutdown_signal() => {
            eprintln!("volley-bench: {signal}: stopping every process it started");
            ExitCode::from(130)
        }
    }
}

async fn shutdown_signal() -> &'static str {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return "interrupted";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminate.recv() => "terminated",
    }
}

/// Runs everything selected; `Ok(false)` when a Volley workload failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let selected = validate_only(&args.only)?;
    let wants = |workload: &str| selected.iter().any(|name| name == workload);
    let volley_bin = std::fs::canonicalize(&args.volley_bin).with_context(|| {
        format!(
            "the volley binary {} does not exist (build it: cargo build --release -p volley-cli)",
            args.volley_bin.display()
        )
    })?;
    let repo = std::fs::canonicalize(&args.repo)
        .with_context(|| format!("the repository root {}", args.repo.display()))?;
    let sizes = if args.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    let machine = Machine::describe(&repo, &volley_bin);
    eprintln!("volley-bench: {}", machine.summary());
    eprintln!("volley-bench: measuring {}", volley_bin.display());
    let retention_flag = if wants("W6") {
        retention_flag(&volley_bin)
    } else {
        None
    };
    let options = ClusterOptions {
        volley_bin: volley_bin.clone(),
        workers: args.workers,
        slots: args.slots,
        coordinator_args: Vec::new(),
    };
    let mut records = Vec::new();
    let mut notes = Vec::new();

    if ["W1", "W2", "W3", "W4"]
        .iter()
        .any(|workload| wants(workload))
    {
        eprintln!("--- volley cluster: W1–W4");
        records.extend(cluster_workloads(&options, &sizes, &wants).await);
        eprintln!("--- volley embedded (volley run): W1–W4");
        records.extend(embedded_workloads(&options, &sizes, &wants).await);
    }
    if wants("W5") {
        eprintln!("--- W5: the Redis ceiling");
        for slice in ceiling::SLICES {
            // Bigger slices: fewer calls, still more completions than slice 1.
            let requests = if slice == 1 {
                sizes.w5_requests
            } else {
                (sizes.w5_requests * 4 / slice).max(1_000)
            };
            let record = ceiling::redis_ceiling(requests, slice, TIMEOUTS.ceiling)
                .await
                .unwrap_or_else(|error| {
                    let mut record = Record::failed(REDIS_CEILING, "W5", &error);
                    record.set("slice", slice);
                    record
                });
            progress(&record);
            records.push(record);
        }
    }
    if wants("W6") {
        eprintln!("--- W6: scale (a fresh cluster per size)");
        match &retention_flag {
            Some(flag) => eprintln!("    coordinator retention flag: {flag} {W6_RETENTION}"),
            None => eprintln!("    retention: n/a (volley coordinator has no retention flag)"),
        }
        for size in &sizes.w6_ops {
            let record = scale_run(&options, *size, retention_flag.as_deref())
                .await
                .unwrap_or_else(|error| {
                    let mut record = Record::failed(VOLLEY, "W6", &error);
                    record.ops = Some(*size as u64);
                    record
                });
            progress(&record);
            records.push(record);
        }
    }

    let peers_wanted = ["W1", "W2", "W3", "W4"]
        .iter()
        .any(|workload| wants(workload));
    if args.smoke || args.no_peers || !peers_wanted {
        notes.push("peers not run (--smoke, --no-peers or --only)".to_owned());
    } else {
        eprintln!("--- peers: Dask, Celery, Ray");
        match peers::run_peers(&repo).await {
            Ok(peer_records) => records.extend(
                peer_records
                    .into_iter()
                    .filter(|record| record.workload == "*" || wants(&record.workload)),
            ),
            Err(error) => {
                eprintln!("warning: peers skipped: {error:#}");
                notes.push(format!("peers skipped: {error:#}"));
            }
        }
    }

    let ratios = report::ratios(&records);
    let results = Results {
        schema: 1,
        mode: if args.smoke { "smoke" } else { "full" }.to_owned(),
        machine,
        peer_versions: if args.smoke || args.no_peers {
            serde_json::Map::new()
        } else {
            peers::versions(&repo)
        },
        sizes,
        cluster: ClusterShape {
            workers: args.workers,
            slots: args.slots,
            retention_flag,
        },
        records,
        ratios,
        notes,
    };
    print_tables(&results);

    // Only a full run replaces the committed results; smoke and partial
    // runs write under target/.
    let partial = selected.len() < ALL_WORKLOADS.len();
    let results_dir = args.results_dir.clone().unwrap_or_else(|| {
        if args.smoke {
            repo.join("target/bench-smoke")
        } else if partial {
            repo.join("target/bench-partial")
        } else {
            repo.join("bench/results")
        }
    });
    let json_path = results_dir.join("latest.json");
    report::write_json(&json_path, &results)?;
    println!("\nwrote {}", json_path.display());
    let png_path = results_dir.join("latest.png");
    let subtitle = format!(
        "{} cores, commit {}, {}",
        results.machine.cores, results.machine.git_commit, results.mode
    );
    match chart::draw(&png_path, &results.records, &subtitle) {
        Ok(true) => println!("wrote {}", png_path.display()),
        Ok(false) => {}
        Err(error) => eprintln!("warning: no chart: {error:#}"),
    }
    if args.smoke {
        println!("smoke run: bench/README.md left as it is");
    } else if partial {
        println!("partial run (--only): bench/README.md left as it is");
    } else {
        let readme = repo.join("bench/README.md");
        report::rewrite_readme(&readme, &report::readme_section(&results))?;
        println!("updated {}", readme.display());
    }

    let volley_failed = results
        .records
        .iter()
        .any(|record| !record.is_ok() && is_ours(&record.system));
    Ok(!volley_failed)
}

/// Records the harness itself is responsible for (a peer's failure is
/// reported, not fatal).
fn is_ours(system: &str) -> bool {
    [VOLLEY, VOLLEY_EMBEDDED, REDIS_CEILING].contains(&system)
}

fn validate_only(only: &[String]) -> anyhow::Result<Vec<String>> {
    let mut selected = Vec::new();
    for name in only {
        let upper = name.trim().to_uppercase();
        if upper.is_empty() {
            continue;
        }
        if !ALL_WORKLOADS.contains(&upper.as_str()) {
            bail!(
                "unknown workload `{name}` in --only (known: {})",
                ALL_WORKLOADS.join(",")
            );
        }
        if !selected.contains(&upper) {
            selected.push(upper);
        }
    }
    if selected.is_empty() {
        bail!("--only selects no workload");
    }
    Ok(selected)
}

/// The first `--retain…`/`--retention…` flag `volley coordinator --help`
/// lists, if any.
fn retention_flag(volley_bin: &Path) -> Option<String> {
    let output = std::process::Command::new(volley_bin)
        .args(["coordinator", "--help"])
        .output()
        .ok()?;
    find_retention_flag(&String::from_utf8_lossy(&output.stdout))
}

fn find_retention_flag(help: &str) -> Option<String> {
    help.split(|character: char| character.is_whitespace() || character == ',' || character == '=')
        .find(|word| word.starts_with("--retain") || word.starts_with("--retention"))
        .map(str::to_owned)
}

fn progress(record: &Record) {
    let ops = record.ops.map_or_else(String::new, |ops| {
        format!(" {} ops", report::thousands(ops as f64))
    });
    match &record.error {
        Some(error) => eprintln!(
            "    {} {}{ops}: error: {error}",
            record.workload, record.system
        ),
        None => eprintln!(
            "    {} {}{ops}: {} ops/s, {} CPU µs/op{}",
            record.workload,
            record.system,
            record
                .ops_per_s
                .map_or_else(|| "—".to_owned(), report::thousands),
            record
                .cpu_us_per_op
                .map_or_else(|| "—".to_owned(), |cpu| format!("{cpu:.1}")),
            match (record.p50_ms, record.p90_ms) {
                (Some(p50), Some(p90)) => format!(", p50 {p50:.2} ms, p90 {p90:.2} ms"),
                _ => String::new(),
            } + &match (
                record.extra.get("redis_commands_per_op"),
                record.extra.get("redis_script_calls_per_op"),
            ) {
                (Some(commands), Some(scripts)) => {
                    format!(", Redis: {commands} commands/op, {scripts} script calls/op")
                }
                _ => String::new(),
            }
        ),
    }
}

fn batch_record(system: &str, workload: &str, run: &BatchRun) -> Record {
    let mut record = Record::measured(system, workload, run.ops, run.wall, &run.cpu);
    record.set("batch_wall_ms", run.batch_wall_ms);
    record.set("submit_s", round(run.submit.as_secs_f64(), 4));
    record.set("peak_rss_kib", rss_json(&run.peak_rss_kib));
    if run.ops > 0 {
        let per_op = |count: u64| round(count as f64 / run.ops as f64, 2);
        record.set("redis_commands_per_op", per_op(run.redis_commands));
        record.set("redis_script_calls_per_op", per_op(run.redis_script_calls));
    }
    record
}

/// W1–W4 on one cluster (after a warm-up batch).
async fn cluster_workloads(
    options: &ClusterOptions,
    sizes: &Sizes,
    wants: &impl Fn(&str) -> bool,
) -> Vec<Record> {
    let selected: Vec<&str> = ["W1", "W2", "W3", "W4"]
        .into_iter()
        .filter(|workload| wants(workload))
        .collect();
    let mut cluster = match start_warm_cluster(options).await {
        Ok(cluster) => cluster,
        Err(error) => {
            let error = error.context("starting the cluster");
            return selected
                .iter()
                .map(|workload| {
                    let record = Record::failed(VOLLEY, workload, &error);
                    progress(&record);
                    record
                })
                .collect();
        }
    };
    let mut records = Vec::new();
    for workload in selected {
        let record = match workload {
            "W4" => {
                workloads::round_trips(&mut cluster, sizes.w4_round_trips, TIMEOUTS.round_trips)
                    .await
                    .map(|trips| round_trips_record(&trips))
            }
            _ => {
                let batch = match workload {
                    "W1" => workloads::independent(sizes.w1_ops),
                    "W2" => workloads::chains(sizes.w2_chains),
                    _ => workloads::fan(sizes.w3_width),
                };
                workloads::run_batch(&mut cluster, batch, TIMEOUTS.batch)
                    .await
                    .map(|run| batch_record(VOLLEY, workload, &run))
            }
        }
        .unwrap_or_else(|error| Record::failed(VOLLEY, workload, &error));
        progress(&record);
        records.push(record);
    }
    cluster.shutdown().await;
    records
}

fn round_trips_record(trips: &workloads::RoundTrips) -> Record {
    let mut record = Record::measured(
        VOLLEY,
        "W4",
        trips.latencies.len() as u64,
        trips.wall,
        &trips.cpu,
    );
    record.p50_ms = percentile_ms(&trips.latencies, 0.5);
    record.p90_ms = percentile_ms(&trips.latencies, 0.9);
    record.set(
        "latency",
        "submit call start → BATCH_FINISHED seen on the watch",
    );
    // Where the time goes (server-side event times, ms resolution).
    let phases: serde_json::Map<String, Value> = trips
        .phases
        .iter()
        .filter_map(|(name, spans)| {
            percentile_ms(spans, 0.5).map(|p50| ((*name).to_owned(), Value::from(p50)))
        })
        .collect();
    eprintln!(
        "    W4 volley phases, p50 ms: {}",
        Value::Object(phases.clone())
    );
    record.set("phases_p50_ms", Value::Object(phases));
    record.set("peak_rss_kib", rss_json(&trips.peak_rss_kib));
    record
}

async fn start_warm_cluster(options: &ClusterOptions) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::start(options).await?;
    workloads::warm_up(&mut cluster).await?;
    Ok(cluster)
}

/// W1–W4 through `volley run` (same worker count and slots as the cluster).
async fn embedded_workloads(
    options: &ClusterOptions,
    sizes: &Sizes,
    wants: &impl Fn(&str) -> bool,
) -> Vec<Record> {
    let mut records = Vec::new();
    let embedded = match Embedded::new(&options.volley_bin, options.workers, options.slots) {
        Ok(embedded) => embedded,
        Err(error) => {
            records.push(Record::failed(VOLLEY_EMBEDDED, "W1", &error));
            return records;
        }
    };
    for workload in ["W1", "W2", "W3", "W4"] {
        if !wants(workload) {
            continue;
        }
        let record = embedded_workload(&embedded, workload, sizes)
            .await
            .unwrap_or_else(|error| Record::failed(VOLLEY_EMBEDDED, workload, &error));
        progress(&record);
        records.push(record);
    }
    records
}

async fn embedded_workload(
    embedded: &Embedded,
    workload: &str,
    sizes: &Sizes,
) -> anyhow::Result<Record> {
    if workload == "W4" {
        let file = embedded.write_batch(&workloads::single(0))?;
        let (latencies, wall, cpu_s) = embedded
            .round_trips(&file, sizes.w4_round_trips, TIMEOUTS.round_trips)
            .await?;
        let cpu = BTreeMap::from([("volley run".to_owned(), cpu_s)]);
        let mut record =
            Record::measured(VOLLEY_EMBEDDED, "W4", latencies.len() as u64, wall, &cpu);
        record.p50_ms = percentile_ms(&latencies, 0.5);
        record.p90_ms = percentile_ms(&latencies, 0.9);
        record.set(
            "latency",
            "spawn of `volley run` → its exit (process start-up included)",
        );
        return Ok(record);
    }
    let batch = match workload {
        "W1" => workloads::independent(sizes.w1_ops),
        "W2" => workloads::chains(sizes.w2_chains),
        _ => workloads::fan(sizes.w3_width),
    };
    let file = embedded.write_batch(&batch)?;
    // One unmeasured run first: the binary and its pages are then cached,
    // as they are for the cluster's long-running processes.
    embedded
        .run(&file, TIMEOUTS.batch)
        .await
        .context("warm-up run")?;
    let run = embedded.run(&file, TIMEOUTS.batch).await?;
    let cpu = BTreeMap::from([("volley run".to_owned(), run.cpu_s)]);
    let mut record = Record::measured(
        VOLLEY_EMBEDDED,
        workload,
        run.ops,
        Duration::from_millis(run.report_wall_ms),
        &cpu,
    );
    record.set("report_wall_ms", run.report_wall_ms);
    record.set("process_wall_s", round(run.process_wall.as_secs_f64(), 4));
    if let Some(kib) = run.peak_rss_kib {
        record.set("peak_rss_kib", serde_json::json!({ "volley run": kib }));
    }
    Ok(record)
}

/// W6's coordinator retention: long enough for the harness to read a
/// million-op batch's status after its watch ended, short enough to wait for.
const W6_RETENTION: &str = "10s";

/// W6 for one size, on a fresh cluster (fresh Redis) so memory is clean.
async fn scale_run(
    options: &ClusterOptions,
    size: usize,
    retention_flag: Option<&str>,
) -> anyhow::Result<Record> {
    let mut options = options.clone();
    if let Some(flag) = retention_flag {
        options.coordinator_args = vec![flag.to_owned(), W6_RETENTION.to_owned()];
    }
    let mut cluster = Cluster::start(&options)
        .await
        .context("starting a fresh cluster")?;
    let outcome = scale_measure(&mut cluster, size, retention_flag).await;
    cluster.shutdown().await;
    outcome
}

async fn scale_measure(
    cluster: &mut Cluster,
    size: usize,
    retention_flag: Option<&str>,
) -> anyhow::Result<Record> {
    let before = cluster.used_memory().await?;
    let built = Instant::now();
    let batch = workloads::independent(size);
    let build_s = built.elapsed().as_secs_f64();
    let run = workloads::run_batch(cluster, batch, TIMEOUTS.scale).await?;
    let finish = cluster.used_memory().await?;
    let mut record = batch_record(VOLLEY, "W6", &run);
    record.set("batch_build_s", round(build_s, 3));
    record.set("redis_used_memory_before", before);
    record.set("redis_used_memory_finish", finish);
    match retention_flag {
        Some(flag) => {
            let (after, waited) = wait_for_retention(cluster, before, finish).await?;
            record.set("retention", format!("{flag} {W6_RETENTION}"));
            record.set("redis_used_memory_after_retention", after);
            record.set("retention_waited_s", round(waited.as_secs_f64(), 2));
        }
        None => {
            record.set("retention", "n/a");
            record.set("redis_used_memory_after_retention", Value::Null);
        }
    }
    Ok(record)
}

/// Polls `used_memory` after a batch finished on a coordinator with a short
/// retention until most of what the batch added is gone (or 60 s).
async fn wait_for_retention(
    cluster: &Cluster,
    before: u64,
    finish: u64,
) -> anyhow::Result<(u64, Duration)> {
    let target = before + finish.saturating_sub(before) / 10;
    let start = Instant::now();
    loop {
        let now = cluster.used_memory().await?;
        if now <= target || start.elapsed() > Duration::from_secs(60) {
            return Ok((now, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_tables(results: &Results) {
    println!("\n{}", results.machine.summary());
    println!(
        "cluster: one coordinator, {} workers × {} slots; CPU = user+sys of every process involved\n",
        results.cluster.workers, results.cluster.slots
    );
    let (header, rows) = report::main_rows(&results.records, &results.ratios);
    if !rows.is_empty() {
        println!("{}", report::terminal_table(&header, &rows, 2));
    }
    for line in report::ceiling_lines(&results.ratios) {
        println!("{line}");
    }
    let (scale_header, scale_rows) = report::scale_rows(&results.records);
    if !scale_rows.is_empty() {
        println!("\nW6, scale (a fresh cluster per size; RSS = peak, VmHWM):");
        println!("{}", report::terminal_table(&scale_header, &scale_rows, 0));
        if let Some(line) = report::scale_summary(&results.records) {
            println!("{line}");
        }
    }
    let errors = report::error_lines(&results.records);
    if !errors.is_empty() {
        println!("\nerrors:");
        for line in errors {
            println!("  {line}");
        }
    }
    for note in &results.notes {
        println!("note: {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepts_known_workloads_in_any_case() {
        let selected =
            validate_only(&["w1".to_owned(), "W4".to_owned(), "W1".to_owned()]).expect("valid");
        assert_eq!(selected, vec!["W1".to_owned(), "W4".to_owned()]);
        assert!(validate_only(&["W7".to_owned()]).is_err());
        assert!(validate_only(&[]).is_err());
    }

    #[test]
    fn a_retention_flag_is_found_in_help_text() {
        let help = "      --lease <LEASE>\n      --retention <RETENTION>\n          Keep finished batches\n";
        assert_eq!(find_retention_flag(help).as_deref(), Some("--retention"));
        assert_eq!(find_retention_flag("--lease <LEASE>"), None);
    }
}
