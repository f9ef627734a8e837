//! One batch is one trace: a client, a coordinator and two workers as real
//! `volley` processes export their spans over OTLP to a collector this test
//! runs, and the spans form one tree from the client's `submit_batch` down
//! to each op's execution on a worker.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use volley_testkit::RedisServer;

use common::{Cluster, batch_file, connect_with_deadline, free_port};

/// One exported span, flattened with its resource's `service.name`.
#[derive(Clone, Debug)]
struct SpanRecord {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
    status: i32,
}

impl SpanRecord {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// An OTLP/gRPC trace collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut records = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|attribute| attribute.key == "service.name")
                })
                .and_then(|attribute| attribute.value.as_ref())
                .map(|value| text(value.value.as_ref()))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    records.push(SpanRecord {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|attribute| {
                                (
                                    attribute.key.clone(),
                                    text(attribute.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                        status: span.status.map_or(0, |status| status.code),
                    });
                }
            }
        }
        self.spans.lock().expect("spans lock").extend(records);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        _ => String::new(),
    }
}

impl Collector {
    /// Serves on a loopback port until `shutdown`; returns its URL.
    async fn start(&self, shutdown: CancellationToken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("collector binds");
        let address = listener.local_addr().expect("collector address");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown.cancelled_owned(),
                )
                .await
                .expect("collector serves");
        });
        format!("http://{address}")
    }

    fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().expect("spans lock").clone()
    }

    /// Waits (with a deadline) until `ready` holds for the spans collected.
    async fn wait_for(&self, what: &str, ready: impl Fn(&[SpanRecord]) -> bool) -> Vec<SpanRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.spans();
            if ready(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; spans so far: {:#?}",
                spans
                    .iter()
                    .map(|span| (&span.service, &span.name, span.attribute("op")))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `volley ARGS` exporting to `collector`. `schedule_delay_ms` is how long
/// its batch span processor waits before an export: a long one means only
/// the flush at exit can deliver the process's spans.
fn traced(collector: &str, schedule_delay_ms: u64) -> Command {
    let mut command = common::volley();
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.to_string())
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Exported spans only reach the collector through the flush at exit.
const FLUSH_AT_EXIT_ONLY: u64 = 600_000;

/// `volley submit FILE --watch --output json` against `url` as a traced
/// client whose spans leave at its exit, sampling with `sampler` when given.
async fn submit_watched(
    collector: &str,
    file: &std::path::Path,
    url: &str,
    sampler: Option<&str>,
) -> std::process::Output {
    let mut command = traced(collector, FLUSH_AT_EXIT_ONLY);
    if let Some(sampler) = sampler {
        command.env("OTEL_TRACES_SAMPLER", sampler);
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        command
            .args(["submit", &file.to_string_lossy(), "--coordinator", url])
            .args(["--watch", "--output", "json"])
            .stdout(Stdio::piped())
            .output(),
    )
    .await
    .expect("volley submit --watch ends")
    .expect("volley submit runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_is_one_trace_from_client_to_workers() {
    let shutdown = CancellationToken::new();
    let collector = Collector::default();
    let collector_url = collector.start(shutdown.clone()).await;
    let redis = RedisServer::start().expect("redis-server starts");
    let root = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The coordinator exports as it goes; the workers and the client only
    // when they exit (SIGTERM, end of command): both paths are checked.
    let mut coordinator = traced(&collector_url, 100)
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis", &redis.url()])
        .spawn()
        .expect("coordinator starts");
    let client = connect_with_deadline(&url, Duration::from_secs(20)).await;
    let mut workers = Vec::new();
    for id in ["w0", "w1"] {
        workers.push(
            traced(&collector_url, FLUSH_AT_EXIT_ONLY)
                .args(["worker", "--coordinator", &url, "--id", id])
                .args(["--slots", "2", "--allow-shell", "--heartbeat", "500ms"])
                .spawn()
                .expect("worker starts"),
        );
    }
    let connected = client
        .wait_for_workers(2, Duration::from_secs(20))
        .await
        .expect("list workers");
    assert_eq!(connected, 2, "both workers connected");

    let chain = batch_file(
        root.path(),
        "chain.yaml",
        r#"
name: traced-chain
ops:
  - id: a
    kind: echo
    args: {text: "a"}
  - id: b
    kind: echo
    args: {text: "${ops.a.output}b"}
  - id: c
    kind: noop
    after: [b]
"#,
    );
    let submitted = submit_watched(&collector_url, &chain, &url, None).await;
    let report: serde_json::Value =
        serde_json::from_slice(&submitted.stdout).expect("a JSON report");
    assert!(submitted.status.success(), "batch failed: {report}");
    assert_eq!(report["state"], "succeeded", "{report}");
    let batch_id = report["batch_id"].as_str().expect("batch_id").to_owned();

    // A failing op: its execution span says so. It also writes down the
    // trace context its program was given.
    let traceparent_file = root.path().join("traceparent.txt");
    let failing = batch_file(
        root.path(),
        "failing.yaml",
        &format!(
            r#"
name: traced-failure
ops:
  - id: broken
    kind: shell
    attempts: 1
    args: {{cmd: "echo $TRACEPARENT > {}; exit 3"}}
"#,
            traceparent_file.display()
        ),
    );
    let failed = submit_watched(&collector_url, &failing, &url, None).await;
    assert_eq!(failed.status.code(), Some(1), "the failing batch fails");

    // SIGTERM: the workers drain, then flush their spans before exiting.
    for worker in &workers {
        Cluster::signal(worker, "TERM");
    }
    for worker in &mut workers {
        let status = tokio::time::timeout(Duration::from_secs(60), worker.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("wait for worker");
        assert!(status.success(), "worker exit: {status}");
    }

    let spans = collector
        .wait_for(
            "the chain's spans from client, coordinator and workers",
            |spans| {
                let executed: HashSet<&str> = spans
                    .iter()
                    .filter(|span| span.name == "op.execute" && span.attribute("batch") == batch_id)
                    .map(|span| span.attribute("op"))
                    .collect();
                spans.iter().any(|span| span.name == "submit_batch")
                    && spans.iter().any(|span| span.name == "batch.SubmitBatch")
                    && executed.len() == 3
                    && spans
                        .iter()
                        .any(|span| span.name == "op.execute" && span.attribute("op") == "broken")
            },
        )
        .await;

    // The client's span is the root of the chain's trace.
    let chain_ops: Vec<&SpanRecord> = spans
        .iter()
        .filter(|span| span.name == "op.execute" && span.attribute("batch") == batch_id)
        .collect();
    let trace_id = chain_ops[0].trace_id.clone();
    let trace: Vec<&SpanRecord> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect();
    let by_id: HashMap<&[u8], &SpanRecord> = trace
        .iter()
        .map(|span| (span.span_id.as_slice(), *span))
        .collect();
    for span in &trace {
        eprintln!(
            "{:<20} {:<18} span {} parent {} op={} worker={} outcome={}",
            span.service,
            span.name,
            hex(&span.span_id),
            hex(&span.parent_span_id),
            span.attribute("op"),
            span.attribute("worker"),
            span.attribute("outcome")
        );
    }
    let only = |name: &str| -> &SpanRecord {
        let named: Vec<&&SpanRecord> = trace.iter().filter(|span| span.name == name).collect();
        assert_eq!(named.len(), 1, "one {name} span in the trace: {named:#?}");
        named[0]
    };
    let submit = only("submit_batch");
    assert_eq!(submit.service, "volley-client");
    assert!(
        submit.parent_span_id.is_empty(),
        "the client's span is the root: {submit:?}"
    );
    let accepted = only("batch.SubmitBatch");
    assert_eq!(accepted.service, "volley-coordinator");
    assert_eq!(
        accepted.parent_span_id, submit.span_id,
        "SubmitBatch is the client span's child"
    );

    // Each op: a dispatch span under SubmitBatch, an execution span under it.
    let dispatched: Vec<&&SpanRecord> = trace
        .iter()
        .filter(|span| span.name == "op.dispatch")
        .collect();
    let mut dispatched_ops: Vec<&str> =
        dispatched.iter().map(|span| span.attribute("op")).collect();
    dispatched_ops.sort_unstable();
    assert_eq!(dispatched_ops, ["a", "b", "c"], "one dispatch span per op");
    for dispatch in &dispatched {
        assert_eq!(dispatch.service, "volley-coordinator");
        assert_eq!(
            dispatch.parent_span_id, accepted.span_id,
            "{dispatch:?} hangs from SubmitBatch"
        );
        assert_eq!(dispatch.attribute("batch"), batch_id);
        let execution = trace
            .iter()
            .find(|span| span.name == "op.execute" && span.parent_span_id == dispatch.span_id)
            .unwrap_or_else(|| panic!("no execution span under {dispatch:?}"));
        assert_eq!(execution.service, "volley-worker");
        assert_eq!(execution.attribute("op"), dispatch.attribute("op"));
        assert_eq!(execution.attribute("attempt"), "1");
        assert_eq!(execution.attribute("outcome"), "succeeded");
        assert!(
            ["w0", "w1"].contains(&execution.attribute("worker")),
            "{execution:?}"
        );
        assert_eq!(execution.attribute("worker"), dispatch.attribute("worker"));
        assert_ne!(execution.status, StatusCode::Error as i32);
    }
    // Every span of the trace hangs, through its parents, from the client's.
    for span in &trace {
        let mut current = *span;
        while !current.parent_span_id.is_empty() {
            current = by_id
                .get(current.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("{span:?}: a parent outside the trace"));
        }
        assert_eq!(
            current.span_id, submit.span_id,
            "{span:?} is in the client's tree"
        );
    }

    // The failing batch is a trace of its own, its op's span marked failed.
    let broken = spans
        .iter()
        .find(|span| span.name == "op.execute" && span.attribute("op") == "broken")
        .expect("the failing op's span");
    assert_ne!(broken.trace_id, trace_id, "another batch, another trace");
    // Its program ran with the op's W3C context in TRACEPARENT.
    let traceparent = std::fs::read_to_string(&traceparent_file).expect("traceparent.txt");
    let fields: Vec<&str> = traceparent.trim().split('-').collect();
    assert_eq!(fields.len(), 4, "a W3C traceparent: {traceparent:?}");
    assert_eq!(
        fields[1],
        hex(&broken.trace_id),
        "the op's trace: {traceparent:?}"
    );
    assert!(
        spans.iter().any(|span| hex(&span.span_id) == fields[2]),
        "its parent is an exported span: {traceparent:?}"
    );
    assert_eq!(broken.attribute("outcome"), "failed");
    assert_eq!(broken.status, StatusCode::Error as i32, "{broken:?}");

    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_variables_nothing_is_exported() {
    // OTEL_SDK_DISABLED wins over an endpoint: plain logging, no export.
    let shutdown = CancellationToken::new();
    let collector = Collector::default();
    let collector_url = collector.start(shutdown.clone()).await;
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "one.yaml",
        "name: untraced\nops:\n  - {id: a, kind: echo, args: {text: hi}}\n",
    );
    let ran = traced(&collector_url, 100)
        .env("OTEL_SDK_DISABLED", "true")
        .current_dir(root.path())
        .args(["run", &file.to_string_lossy(), "--workers", "1"])
        .output()
        .await
        .expect("volley run runs");
    assert!(ran.status.success(), "volley run: {ran:?}");
    assert!(collector.spans().is_empty(), "nothing exported");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_its_client_sampled_out_is_not_recorded_anywhere() {
    // The client decides (OTEL_TRACES_SAMPLER=always_off); the coordinator
    // and the worker sample parent-based by default, so they follow it.
    let shutdown = CancellationToken::new();
    let collector = Collector::default();
    let collector_url = collector.start(shutdown.clone()).await;
    let redis = RedisServer::start().expect("redis-server starts");
    let root = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut coordinator = traced(&collector_url, FLUSH_AT_EXIT_ONLY)
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--redis", &redis.url()])
        .spawn()
        .expect("coordinator starts");
    let client = connect_with_deadline(&url, Duration::from_secs(20)).await;
    let mut worker = traced(&collector_url, FLUSH_AT_EXIT_ONLY)
        .args(["worker", "--coordinator", &url, "--id", "w0"])
        .spawn()
        .expect("worker starts");
    let connected = client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("list workers");
    assert_eq!(connected, 1, "the worker connected");
    let file = batch_file(
        root.path(),
        "pair.yaml",
        "name: sampled-out\nops:\n  - {id: a, kind: noop}\n  - {id: b, kind: noop, after: [a]}\n",
    );
    let submitted = submit_watched(&collector_url, &file, &url, Some("always_off")).await;
    assert!(submitted.status.success(), "volley submit: {submitted:?}");
    let sampled_out: serde_json::Value =
        serde_json::from_slice(&submitted.stdout).expect("a JSON report");
    // The same batch again, sampled: what the first must not have.
    let sampled = submit_watched(&collector_url, &file, &url, None).await;
    assert!(sampled.status.success(), "volley submit: {sampled:?}");
    let sampled: serde_json::Value =
        serde_json::from_slice(&sampled.stdout).expect("a JSON report");
    // Every process flushes at exit: after that, nothing more can arrive.
    Cluster::signal(&worker, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(60), worker.wait())
        .await
        .expect("worker exits after SIGTERM");
    Cluster::signal(&coordinator, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(60), coordinator.wait())
        .await
        .expect("coordinator exits after SIGTERM");
    let spans = collector.spans();
    let of_batch = |batch: &serde_json::Value| -> Vec<String> {
        let batch = batch["batch_id"].as_str().expect("batch_id");
        spans
            .iter()
            .filter(|span| span.name.starts_with("op.") && span.attribute("batch") == batch)
            .map(|span| format!("{} {}", span.service, span.name))
            .collect()
    };
    assert_eq!(
        of_batch(&sampled).len(),
        4,
        "two dispatch and two execution spans"
    );
    let recorded = of_batch(&sampled_out);
    assert!(recorded.is_empty(), "recorded: {recorded:?}");
    let roots = spans
        .iter()
        .filter(|span| span.name == "submit_batch" || span.name == "batch.SubmitBatch")
        .count();
    assert_eq!(
        roots, 2,
        "only the sampled batch's client and SubmitBatch spans"
    );
    shutdown.cancel();
}
