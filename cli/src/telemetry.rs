//! Logging and metrics for the binary: `tracing` to stderr, filtered by
//! `VOLLEY_LOG` (or `RUST_LOG`), with a per-command default; the Prometheus
//! endpoint of `--metrics-listen`.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str) {
    let filter = std::env::var("VOLLEY_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default_filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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
