//! The workloads as batches (identical for every system), and running them on a cluster through the client SDK.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use volley_client::{Client, v1};

use crate::cluster::Cluster;

/// Every W2 chain is this long.
pub const CHAIN_LENGTH: usize = 10;

/// How big each workload is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sizes {
    /// W1: independent no-op ops.
    pub w1_ops: usize,
    /// W2: chains of [`CHAIN_LENGTH`].
    pub w2_chains: usize,
    /// W3: width of the fan between the first and the last op.
    pub w3_width: usize,
    /// W4: sequential single-op round trips.
    pub w4_round_trips: usize,
    /// W5: redis-benchmark requests.
    pub w5_requests: usize,
    /// W6: batch sizes, each on a fresh cluster.
    pub w6_ops: Vec<usize>,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            w1_ops: 20_000,
            w2_chains: 1_000,
            w3_width: 5_000,
            w4_round_trips: 200,
            w5_requests: 200_000,
            w6_ops: vec![10_000, 100_000, 1_000_000],
        }
    }

    /// CI's smoke run: every code path, tiny sizes.
    pub fn smoke() -> Sizes {
        Sizes {
            w1_ops: 500,
            w2_chains: 50,
            w3_width: 200,
            w4_round_trips: 20,
            w5_requests: 5_000,
            w6_ops: vec![1_000, 5_000],
        }
    }
}

fn noop(id: String, after: Vec<String>) -> v1::Op {
    v1::Op {
        id,
        kind: "noop".to_owned(),
        after,
        ..v1::Op::default()
    }
}

fn batch(name: String, ops: Vec<v1::Op>) -> v1::Batch {
    v1::Batch {
        name,
        ops,
        ..v1::Batch::default()
    }
}

/// W1 and W6: `count` independent no-ops.
pub fn independent(count: usize) -> v1::Batch {
    let ops = (0..count)
        .map(|index| noop(format!("n{index}"), Vec::new()))
        .collect();
    batch(format!("bench-independent-{count}"), ops)
}

/// W2: `chains` chains of [`CHAIN_LENGTH`] no-ops, each after the one before.
pub fn chains(chains: usize) -> v1::Batch {
    let mut ops = Vec::with_capacity(chains * CHAIN_LENGTH);
    for chain in 0..chains {
        for step in 0..CHAIN_LENGTH {
            let after = if step == 0 {
                Vec::new()
            } else {
                vec![format!("c{chain}-{}", step - 1)]
            };
            ops.push(noop(format!("c{chain}-{step}"), after));
        }
    }
    batch(format!("bench-chains-{chains}x{CHAIN_LENGTH}"), ops)
}

/// W3: one no-op, then `width` no-ops after it, then one after all of them.
pub fn fan(width: usize) -> v1::Batch {
    let mut ops = Vec::with_capacity(width + 2);
    ops.push(noop("source".to_owned(), Vec::new()));
    let middle: Vec<String> = (0..width).map(|index| format!("f{index}")).collect();
    for id in &middle {
        ops.push(noop(id.clone(), vec!["source".to_owned()]));
    }
    ops.push(noop("sink".to_owned(), middle));
    batch(format!("bench-fan-{width}"), ops)
}

/// W4: one no-op.
pub fn single(round_trip: usize) -> v1::Batch {
    batch(
        format!("bench-round-trip-{round_trip}"),
        vec![noop("only".to_owned(), Vec::new())],
    )
}

/// A batch as the JSON batch file `volley run` reads (README "The batch file").
pub fn batch_file_json(batch: &v1::Batch) -> Value {
    let ops: Vec<Value> = batch
        .ops
        .iter()
        .map(|op| {
            if op.after.is_empty() {
                json!({"id": op.id, "kind": op.kind})
            } else {
                json!({"id": op.id, "kind": op.kind, "after": op.after})
            }
        })
        .collect();
    json!({"name": batch.name, "ops": ops})
}

/// One batch run on a cluster.
#[derive(Debug)]
pub struct BatchRun {
    pub ops: u64,
    /// Submit call start → `BATCH_FINISHED` seen on the watch.
    pub wall: Duration,
    /// How long the submit call took (the batch streamed and validated).
    pub submit: Duration,
    /// The batch's own `wall_ms` from its status.
    pub batch_wall_ms: u64,
    pub cpu: BTreeMap<String, f64>,
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// Commands Redis ran meanwhile, those inside scripts included (the
    /// summary reads and this harness's own INFO calls count too).
    pub redis_commands: u64,
    /// Script calls (EVALSHA) meanwhile: each is one round trip.
    pub redis_script_calls: u64,
}

/// Submits `batch`, follows its events until it finishes, and checks every
/// op succeeded; CPU is counted over every cluster process and this one,
/// from just before the submit to just after the last event. Past
/// `timeout` the batch is cancelled and this fails.
pub async fn run_batch(
    cluster: &mut Cluster,
    batch: v1::Batch,
    timeout: Duration,
) -> anyhow::Result<BatchRun> {
    cluster.check_alive()?;
    let processes = cluster.processes();
    let client = cluster.client().clone();
    let commands_before = cluster.command_counts().await?;
    let before = processes.cpu_snapshot()?;
    let start = Instant::now();
    let mut submitted: Option<(String, Duration)> = None;
    let outcome = tokio::time::timeout(timeout, async {
        let response = client.submit(batch).await.context("submitting the batch")?;
        submitted = Some((response.batch_id.clone(), start.elapsed()));
        wait_finished(&client, &response.batch_id).await
    })
    .await;
    let wall = start.elapsed();
    let after = processes.cpu_snapshot();
    let state = match outcome {
        Ok(state) => state,
        Err(_elapsed) => {
            if let Some((batch_id, _)) = &submitted {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), client.cancel(batch_id)).await;
            }
            cluster.check_alive()?;
            bail!("timed out after {timeout:?}");
        }
    };
    let state = match state {
        Ok(state) => state,
        Err(error) => {
            cluster.check_alive()?;
            return Err(error);
        }
    };
    let Some((batch_id, submit)) = submitted else {
        bail!("the batch finished without having been submitted");
    };
    let cpu = before.delta(&after?)?;
    let summary = client
        .summary(&batch_id)
        .await
        .with_context(|| format!("reading the status of batch {batch_id}"))?;
    check_succeeded(&batch_id, state, &summary)?;
    let commands_after = cluster.command_counts().await?;
    Ok(BatchRun {
        redis_commands: commands_after.0.saturating_sub(commands_before.0),
        redis_script_calls: commands_after.1.saturating_sub(commands_before.1),
        ops: u64::from(summary.total),
        wall,
        submit,
        batch_wall_ms: summary.wall_ms,
        cpu,
        peak_rss_kib: processes.peak_rss(),
    })
}

/// W4: `count` single-op batches one after another; each latency is the
/// submit call's start → `BATCH_FINISHED` seen on the watch.
pub async fn round_trips(
    cluster: &mut Cluster,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<RoundTrips> {
    cluster.check_alive()?;
    let processes = cluster.processes();
    let client = cluster.client().clone();
    let before = processes.cpu_snapshot()?;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    let mut phases: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let outcome = tokio::time::timeout(timeout, async {
        for round_trip in 0..count {
            let sent = Instant::now();
            let response = client
                .submit(single(round_trip))
                .await
                .context("submitting")?;
            let submitted = sent.elapsed();
            let mut events = Vec::new();
            let state =
                wait_finished_keeping(&client, &response.batch_id, Some(&mut events)).await?;
            latencies.push(sent.elapsed());
            let seen_ms = unix_ms();
            if state != v1::BatchState::Succeeded as i32 {
                let summary = client.summary(&response.batch_id).await?;
                check_succeeded(&response.batch_id, state, &summary)?;
            }
            phases.entry("submit_call").or_default().push(submitted);
            for (name, span) in phase_spans(&events, seen_ms) {
                phases.entry(name).or_default().push(span);
            }
        }
        anyhow::Ok(())
    })
    .await;
    let wall = start.elapsed();
    match outcome {
        Ok(result) => result?,
        Err(_elapsed) => bail!(
            "timed out after {timeout:?} ({} of {count} round trips done)",
            latencies.len()
        ),
    }
    let cpu = before.delta(&processes.cpu_snapshot()?)?;
    Ok(RoundTrips {
        latencies,
        phases,
        wall,
        cpu,
        peak_rss_kib: processes.peak_rss(),
    })
}

/// Where a one-op round trip's time goes, from the events' server-side
/// `at_ms` (ms resolution) and the moment the client saw the last one:
/// submitted → started (queued and dispatched), started → succeeded (run
/// and result recorded), succeeded → finished, finished → seen (the watch).
fn phase_spans(events: &[v1::BatchEvent], seen_ms: u64) -> Vec<(&'static str, Duration)> {
    let at = |kind: v1::EventKind| {
        events
            .iter()
            .find(|event| event.kind == kind as i32)
            .map(|event| event.at_ms)
    };
    let submitted = at(v1::EventKind::BatchSubmitted);
    let started = at(v1::EventKind::OpStarted);
    let succeeded = at(v1::EventKind::OpSucceeded);
    let finished = at(v1::EventKind::BatchFinished);
    let span =
        |from: Option<u64>, to: Option<u64>| Some(Duration::from_millis(to?.checked_sub(from?)?));
    [
        ("submitted_to_started", span(submitted, started)),
        ("started_to_succeeded", span(started, succeeded)),
        ("succeeded_to_finished", span(succeeded, finished)),
        ("finished_to_seen", span(finished, Some(seen_ms))),
    ]
    .into_iter()
    .filter_map(|(name, span)| span.map(|span| (name, span)))
    .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The W4 measurements.
#[derive(Debug)]
pub struct RoundTrips {
    pub latencies: Vec<Duration>,
    /// Each round trip's phases (see `phase_spans`), by name.
    pub phases: BTreeMap<&'static str, Vec<Duration>>,
    pub wall: Duration,
    pub cpu: BTreeMap<String, f64>,
    pub peak_rss_kib: BTreeMap<String, u64>,
}

/// Follows the batch's events until `BATCH_FINISHED`; its batch state.
async fn wait_finished(client: &Client, batch_id: &str) -> anyhow::Result<i32> {
    wait_finished_keeping(client, batch_id, None).await
}

/// [`wait_finished`], keeping every event in `kept` when given.
async fn wait_finished_keeping(
    client: &Client,
    batch_id: &str,
    mut kept: Option<&mut Vec<v1::BatchEvent>>,
) -> anyhow::Result<i32> {
    let mut events = client
        .watch(batch_id, 0)
        .await
        .with_context(|| format!("watching batch {batch_id}"))?;
    while let Some(event) = events.next().await {
        let event = event.with_context(|| format!("watching batch {batch_id}"))?;
        let finished =
            (event.kind == v1::EventKind::BatchFinished as i32).then_some(event.batch_state);
        if let Some(kept) = kept.as_deref_mut() {
            kept.push(event);
        }
        if let Some(state) = finished {
            return Ok(state);
        }
    }
    bail!("the watch of batch {batch_id} ended before the batch finished")
}

fn check_succeeded(batch_id: &str, state: i32, summary: &v1::BatchStatus) -> anyhow::Result<()> {
    if state == v1::BatchState::Succeeded as i32 && summary.succeeded == summary.total {
        return Ok(());
    }
    let state_name = v1::BatchState::try_from(state)
        .map(|state| state.as_str_name())
        .unwrap_or("an unknown state");
    bail!(
        "batch {batch_id} ended {state_name}: {} of {} succeeded, {} failed, {} skipped, {} cancelled{}",
        summary.succeeded,
        summary.total,
        summary.failed,
        summary.skipped,
        summary.cancelled,
        if summary.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", summary.error)
        }
    )
}

/// A short batch before measuring, so connections and caches are warm.
pub async fn warm_up(cluster: &mut Cluster) -> anyhow::Result<()> {
    run_batch(cluster, independent(200), Duration::from_secs(60))
        .await
        .context("warm-up batch")?;
    Ok(())
}

/// `peak RSS` map → JSON.
pub fn rss_json(peak_rss_kib: &BTreeMap<String, u64>) -> Value {
    Value::Object(
        peak_rss_kib
            .iter()
            .map(|(name, kib)| (name.clone(), Value::from(*kib)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_expected_sizes_and_edges() {
        assert_eq!(independent(7).ops.len(), 7);
        let chained = chains(3);
        assert_eq!(chained.ops.len(), 3 * CHAIN_LENGTH);
        assert_eq!(chained.ops[1].after, vec!["c0-0".to_owned()]);
        assert!(chained.ops[CHAIN_LENGTH].after.is_empty());
        let fanned = fan(4);
        assert_eq!(fanned.ops.len(), 6);
        assert_eq!(fanned.ops[5].after.len(), 4);
        assert_eq!(fanned.ops[2].after, vec!["source".to_owned()]);
    }

    #[test]
    fn the_batch_file_is_what_the_client_reads_back() {
        let fanned = fan(3);
        let text = batch_file_json(&fanned).to_string();
        let parsed = volley_client::parse_batch(&text, "fan.json").expect("valid batch file");
        assert_eq!(parsed.ops.len(), fanned.ops.len());
        assert_eq!(parsed.ops[4].after, fanned.ops[4].after);
        assert_eq!(parsed.ops[4].kind, "noop");
    }
}
