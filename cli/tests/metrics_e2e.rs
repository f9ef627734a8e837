//! Metrics end to end: a real redis-server, a `volley coordinator` and a
//! `volley worker` with `--metrics-listen`, scraped over plain HTTP while a
//! batch of slow ops runs on fewer slots than it has ops, and after it ends.
//! Waits are for conditions with deadlines; nothing asserts a timing.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::{connect_with_deadline, free_port};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use volley_client::v1::{self, BatchState};
use volley_testkit::RedisServer;

/// Ops in the batch, and slots of its one worker (fewer: ops queue).
const OPS: u64 = 16;
const SLOTS: u64 = 2;
/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);
const KEDA_KEY: &str = "volley:queue:ready";

/// One scrape: `(name, labels) → value`.
#[derive(Debug, Default)]
struct Scrape {
    series: BTreeMap<(String, BTreeMap<String, String>), f64>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (key, BTreeMap::new()),
            };
            series.insert((name.to_owned(), labels), value);
        }
        Scrape { series, text }
    }

    /// The value of the series with exactly these labels (0 when absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.series
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum of every series of `name`.
    fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|((series, _), _)| series == name)
            .map(|(_, value)| value)
            .sum()
    }

    fn has_help(&self, name: &str) -> bool {
        self.text.contains(&format!("# HELP {name} "))
    }
}

/// `k="v",k2="v2"` (values hold no quotes or commas here).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

/// `GET /metrics` over a plain TCP stream (HTTP/1.1, `Connection: close`).
async fn scrape(port: u16) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Scrape::parse(body.to_owned())
}

/// Scrapes until `done` holds (or the deadline passes: the last scrape is
/// returned either way, for the caller's asserts to explain).
async fn scrape_until(port: u16, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let scraped = scrape(port).await;
        if done(&scraped) || tokio::time::Instant::now() >= until {
            return scraped;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes until the endpoint answers at all.
async fn wait_for_endpoint(port: u16) {
    let until = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < until,
            "metrics endpoint on port {port} never came up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn ready_list_length(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("LLEN")
        .arg(KEDA_KEY)
        .query_async(redis)
        .await
        .expect("LLEN")
}

fn spawn(args: &[&str]) -> Child {
    common::volley()
        .args(args)
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("volley starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_batch_and_the_ready_gauge_drains_to_zero() {
    let redis = RedisServer::start().expect("redis-server starts");
    let mut redis_connection = redis::Client::open(redis.url())
        .expect("redis client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let (grpc_port, coordinator_metrics, worker_metrics) = (free_port(), free_port(), free_port());
    let url = format!("http://127.0.0.1:{grpc_port}");
    let _coordinator = spawn(&[
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{grpc_port}"),
        "--redis",
        &redis.url(),
        "--resync-interval",
        "100ms",
        "--metrics-listen",
        &format!("127.0.0.1:{coordinator_metrics}"),
    ]);
    let client = connect_with_deadline(&url, DEADLINE).await;
    let _worker = spawn(&[
        "worker",
        "--coordinator",
        &url,
        "--id",
        "metered",
        "--slots",
        &SLOTS.to_string(),
        "--heartbeat",
        "500ms",
        "--metrics-listen",
        &format!("127.0.0.1:{worker_metrics}"),
    ]);
    let connected = client
        .wait_for_workers(1, DEADLINE)
        .await
        .expect("list workers");
    assert_eq!(connected, 1);
    wait_for_endpoint(coordinator_metrics).await;
    wait_for_endpoint(worker_metrics).await;

    let ops = (0..OPS)
        .map(|index| v1::Op {
            id: format!("nap-{index}"),
            kind: "sleep".to_owned(),
            args_json: json!({"ms": 400}).to_string(),
            ..Default::default()
        })
        .collect();
    let submitted = client
        .submit(v1::Batch {
            name: "metered".to_owned(),
            ops,
            ..Default::default()
        })
        .await
        .expect("submit");

    // While it runs: ops wait on the ready queue, and both the gauge and the
    // KEDA list say so.
    let running = scrape_until(coordinator_metrics, |scraped| {
        scraped.sum("volley_coordinator_ready_ops") > 0.0
    })
    .await;
    assert!(
        running.sum("volley_coordinator_ready_ops") > 0.0,
        "the ready gauge never rose:\n{}",
        running.text
    );
    assert!(
        running.get("volley_coordinator_ready_ops", &[("priority", "medium")]) > 0.0,
        "ops without a priority are medium:\n{}",
        running.text
    );
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut queued = ready_list_length(&mut redis_connection).await;
    while queued == 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        queued = ready_list_length(&mut redis_connection).await;
    }
    assert!(queued > 0, "LLEN {KEDA_KEY} never rose above 0");
    assert!(queued <= OPS, "LLEN {KEDA_KEY} = {queued} > {OPS} ops");

    // It ends.
    let until = tokio::time::Instant::now() + DEADLINE;
    let state = loop {
        let summary = client.summary(&submitted.batch_id).await.expect("summary");
        let state = BatchState::try_from(summary.state).expect("a known state");
        if !matches!(state, BatchState::Running | BatchState::Unspecified)
            || tokio::time::Instant::now() >= until
        {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state, BatchState::Succeeded);
    // A call that fails, for the gRPC counter's code label.
    assert!(client.summary("no-such-batch").await.is_err());

    // Then the gauges drain to zero and the counters add up.
    let done = scrape_until(coordinator_metrics, |scraped| {
        scraped.sum("volley_coordinator_ready_ops") == 0.0
            && scraped.get("volley_coordinator_active_batches", &[]) == 0.0
            && scraped.get("volley_coordinator_worker_slots", &[("state", "busy")]) == 0.0
            && scraped.get(
                "volley_coordinator_ops_total",
                &[("state", "succeeded"), ("kind", "sleep")],
            ) == OPS as f64
            && scraped.get(
                "volley_coordinator_batches_total",
                &[("state", "succeeded")],
            ) == 1.0
    })
    .await;
    let ops = OPS as f64;
    let slots = SLOTS as f64;
    assert_eq!(
        done.sum("volley_coordinator_ready_ops"),
        0.0,
        "{}",
        done.text
    );
    assert_eq!(done.get("volley_coordinator_active_batches", &[]), 0.0);
    assert_eq!(
        done.get(
            "volley_coordinator_ops_total",
            &[("state", "started"), ("kind", "sleep")]
        ),
        ops,
        "{}",
        done.text
    );
    assert_eq!(
        done.get(
            "volley_coordinator_ops_total",
            &[("state", "succeeded"), ("kind", "sleep")]
        ),
        ops,
        "{}",
        done.text
    );
    assert_eq!(
        done.get(
            "volley_coordinator_ops_total",
            &[("state", "failed"), ("kind", "sleep")]
        ),
        0.0
    );
    assert_eq!(
        done.get(
            "volley_coordinator_batches_total",
            &[("state", "submitted")]
        ),
        1.0
    );
    assert_eq!(
        done.get(
            "volley_coordinator_batches_total",
            &[("state", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        done.get("volley_coordinator_dispatch_latency_seconds_count", &[]),
        ops,
        "{}",
        done.text
    );
    assert_eq!(done.get("volley_coordinator_retries_total", &[]), 0.0);
    assert_eq!(
        done.get("volley_coordinator_lease_expiries_total", &[]),
        0.0
    );
    assert_eq!(done.get("volley_coordinator_workers_connected", &[]), 1.0);
    assert_eq!(
        done.get("volley_coordinator_worker_slots", &[("state", "busy")])
            + done.get("volley_coordinator_worker_slots", &[("state", "free")]),
        slots
    );
    for verb in [
        "create_batch",
        "claim",
        "complete",
        "ready_depth",
        "publish_ready_gauge",
    ] {
        assert!(
            done.get(
                "volley_coordinator_redis_round_trips_total",
                &[("verb", verb)]
            ) > 0.0,
            "no {verb} counted:\n{}",
            done.text
        );
    }
    let grpc = "volley_coordinator_grpc_requests_total";
    assert_eq!(
        done.get(
            grpc,
            &[
                ("method", "volley.v1.BatchService/SubmitBatch"),
                ("code", "OK")
            ]
        ),
        1.0,
        "{}",
        done.text
    );
    assert!(
        done.get(
            grpc,
            &[
                ("method", "volley.v1.BatchService/GetBatch"),
                ("code", "OK")
            ]
        ) >= 1.0
    );
    assert_eq!(
        done.get(
            grpc,
            &[
                ("method", "volley.v1.BatchService/GetBatch"),
                ("code", "NotFound")
            ]
        ),
        1.0,
        "{}",
        done.text
    );
    assert_eq!(
        done.get(
            grpc,
            &[
                ("method", "volley.v1.WorkerService/Session"),
                ("code", "OK")
            ]
        ),
        1.0
    );
    for name in [
        "volley_coordinator_ops_total",
        "volley_coordinator_ready_ops",
        "volley_coordinator_dispatch_latency_seconds",
        "volley_coordinator_redis_round_trips_total",
        "volley_coordinator_worker_slots",
    ] {
        assert!(done.has_help(name), "no HELP for {name}:\n{}", done.text);
    }

    let until = tokio::time::Instant::now() + DEADLINE;
    let mut queued = ready_list_length(&mut redis_connection).await;
    while queued != 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        queued = ready_list_length(&mut redis_connection).await;
    }
    assert_eq!(queued, 0, "LLEN {KEDA_KEY} after the batch ended");

    let worker = scrape_until(worker_metrics, |scraped| {
        scraped.get("volley_worker_slots", &[("state", "busy")]) == 0.0
    })
    .await;
    assert_eq!(
        worker.get(
            "volley_worker_ops_total",
            &[("kind", "sleep"), ("outcome", "succeeded")]
        ),
        ops,
        "{}",
        worker.text
    );
    assert_eq!(
        worker.get(
            "volley_worker_op_duration_seconds_count",
            &[("kind", "sleep")]
        ),
        ops,
        "{}",
        worker.text
    );
    assert_eq!(worker.get("volley_worker_slots", &[("state", "busy")]), 0.0);
    assert_eq!(
        worker.get("volley_worker_slots", &[("state", "busy")])
            + worker.get("volley_worker_slots", &[("state", "free")]),
        slots
    );
    assert_eq!(worker.get("volley_worker_connected", &[]), 1.0);
    assert_eq!(worker.get("volley_worker_draining", &[]), 0.0);
    assert!(worker.has_help("volley_worker_op_duration_seconds"));
}

/// A taken address is refused before anything starts (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_address_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let status = common::volley()
        .args([
            "worker",
            "--coordinator",
            "http://127.0.0.1:1",
            "--metrics-listen",
            &address,
        ])
        .env("VOLLEY_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .expect("volley runs");
    assert_eq!(status.code(), Some(2));
}
