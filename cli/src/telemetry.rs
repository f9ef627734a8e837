//! Logging, tracing and metrics for the binary: `tracing` to stderr,
//! filtered by `VOLLEY_LOG` (or `RUST_LOG`), with a per-command default;
//! when the standard OpenTelemetry variables ask for it, spans exported over
//! OTLP; and the Prometheus endpoint of `--metrics-listen`.
//!
//! OTLP export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless `OTEL_SDK_DISABLED`
//! is `true` or `OTEL_TRACES_EXPORTER` is `none`. The SDK reads the rest:
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (else the command's
//! default service name), `OTEL_TRACES_SAMPLER`/`_ARG` (default
//! `parentbased_always_on`), `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`. Spans go
//! through a batch processor on the tokio runtime and a gRPC (tonic)
//! exporter; [`shutdown`] flushes them before the process exits. W3C
//! `traceparent` is the propagation format.
//!
//! Which spans are exported: the boundary spans — those that declare an
//! `otel.kind` (a client's `submit_batch`, the coordinator's
//! `batch.SubmitBatch` and `op.dispatch`, a worker's `op.execute`) — and
//! everything inside them, at `VOLLEY_TRACE_LEVEL` (default `info`) or
//! above. The long-lived spans of a process (a worker's session, the
//! dispatcher loop) and what runs under them are not: they would make every
//! process one endless trace.
//!
//! With OTLP off nothing changes from plain logging: the same subscriber as
//! before, no propagator (libraries then inject and extract nothing).

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::level_filters::LevelFilter;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The installed tracer provider, shut down (flushed) by [`shutdown`].
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);
/// `service.name` unless the environment names one.
static DEFAULT_SERVICE_NAME: OnceLock<&'static str> = OnceLock::new();

/// How long flushing the last spans may take at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the `service.name` this process reports unless `OTEL_SERVICE_NAME`
/// or `OTEL_RESOURCE_ATTRIBUTES` name one. Call before [`init`].
pub fn set_default_service_name(name: &'static str) {
    let _ = DEFAULT_SERVICE_NAME.set(name);
}

/// Whether log lines on stderr get ANSI colours: only on a terminal (a
/// log written to a file or a pipe holds no escape codes), and never when
/// `NO_COLOR` is set to anything (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

pub fn init(default_filter: &str) {
    let filter = std::env::var("VOLLEY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default_filter.to_owned());
    if !otlp_enabled() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(colour_on_stderr())
            .with_target(false)
            .try_init();
        return;
    }
    let provider = match tracer_provider() {
        Ok(provider) => provider,
        Err(error) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(colour_on_stderr())
                .with_target(false)
                .try_init();
            tracing::warn!(%error, "OpenTelemetry export is off: cannot build the OTLP exporter");
            return;
        }
    };
    let level = trace_level();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_target(false)
        .with_filter(EnvFilter::new(filter));
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("volley"))
        .with_filter(dynamic_filter_fn(
            move |metadata: &Metadata<'_>, context: &Context<'_, _>| {
                exported(metadata, context, level)
            },
        ));
    if tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
    {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // For code that uses the OpenTelemetry API directly, not `tracing`.
        opentelemetry::global::set_tracer_provider(provider.clone());
        if let Ok(mut installed) = PROVIDER.lock() {
            *installed = Some(provider);
        }
    }
}

/// Flushes and stops the exporter, if one runs: the spans of the last
/// moments (a client's whole trace, a stopping server's last ops) are sent
/// before the process exits. Call on the runtime, after the command ended.
pub async fn shutdown() {
    let provider = PROVIDER
        .lock()
        .ok()
        .and_then(|mut installed| installed.take());
    let Some(provider) = provider else {
        return;
    };
    // `shutdown` blocks until the batch processor (a task on this runtime)
    // has exported what it holds: off the async workers.
    let flushed = tokio::time::timeout(
        FLUSH_TIMEOUT,
        tokio::task::spawn_blocking(move || provider.shutdown()),
    )
    .await;
    match flushed {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => eprintln!("warning: could not flush trace spans: {error}"),
        Ok(Err(error)) => eprintln!("warning: could not flush trace spans: {error}"),
        Err(_) => eprintln!("warning: flushing trace spans timed out"),
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

fn otlp_enabled() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    let no_exporter = std::env::var("OTEL_TRACES_EXPORTER")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("none"));
    !disabled
        && !no_exporter
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The most detailed level exported (`VOLLEY_TRACE_LEVEL`, default info).
fn trace_level() -> LevelFilter {
    std::env::var("VOLLEY_TRACE_LEVEL")
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Boundary spans (they declare an `otel.kind`) and whatever happens inside
/// a span this layer records.
fn exported<S>(metadata: &Metadata<'_>, context: &Context<'_, S>, level: LevelFilter) -> bool
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    if *metadata.level() > level {
        return false;
    }
    (metadata.is_span() && metadata.fields().field("otel.kind").is_some())
        || context.lookup_current().is_some()
}

fn tracer_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let mut resource = Resource::builder();
    let named = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name(*DEFAULT_SERVICE_NAME.get().unwrap_or(&"volley"));
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

/// Which process the metrics endpoint serves (each has its own metrics).
#[derive(Clone, Copy, Debug)]
pub enum Component {
    Coordinator,
    Worker,
}

/// Dispatch latencies: sub-millisecond when a worker is free, up to the
/// seconds an op can wait parked for one.
const DISPATCH_LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Op durations: from a noop's microseconds to a long shell or agent op.
const OP_DURATION_BUCKETS: &[f64] = &[
    0.000_1, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Installs the Prometheus recorder (the only one in the process; library
/// code only calls the `metrics` macros, no-ops without it) and serves its
/// text format over HTTP on `address` (`GET /metrics`; the exporter answers
/// any path). Binds before returning, so a taken address is an error here.
/// Must run inside the tokio runtime, before the coordinator or worker
/// makes its metric handles.
pub fn install_metrics(address: SocketAddr, component: Component) -> anyhow::Result<()> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(
            Matcher::Full(volley_coordinator::metrics::DISPATCH_LATENCY_SECONDS.to_owned()),
            DISPATCH_LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(volley_worker::metrics::OP_DURATION_SECONDS.to_owned()),
            OP_DURATION_BUCKETS,
        )?;
    let (recorder, exporter) = builder.build()?;
    tokio::spawn(async move {
        if let Err(error) = exporter.await {
            tracing::warn!(?error, "metrics endpoint stopped");
        }
    });
    metrics::set_global_recorder(recorder)?;
    match component {
        Component::Coordinator => volley_coordinator::metrics::describe(),
        Component::Worker => volley_worker::metrics::describe(),
    }
    tracing::info!(%address, "metrics endpoint listening (GET /metrics)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_wanted;

    #[test]
    fn log_lines_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
    }
}
