//! The worker's life: validate config, connect (with backoff), serve sessions, reconnect, drain on shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::confine::Root;
use crate::executor::Executor;
use crate::grpc::session::{OpenError, SessionEnd, SessionParams, run_session};
use crate::grpc::{ConnectError, GrpcMemory, GrpcSpawner, lazy_channel};
use crate::registry::Registry;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a worker connects and what it offers.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's URL, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    /// Defaults to `<hostname>-<pid>-<4 hex>` ([`default_worker_id`]).
    pub worker_id: Option<String>,
    /// Ops run at once; the coordinator never assigns more.
    pub slots: u32,
    /// Matched against ops' `requires`.
    pub labels: BTreeMap<String, String>,
    /// What handlers see as their root (give the registry's `BuiltinConfig` the same).
    pub root: Option<PathBuf>,
    /// What handlers see as `allow_shell` (give the registry's `BuiltinConfig` the same).
    pub allow_shell: bool,
    pub heartbeat: Duration,
    /// On shutdown, how long running ops may take to finish before they are
    /// cancelled and handed back to the coordinator (`ReturnOps`).
    pub drain_timeout: Duration,
}

impl WorkerConfig {
    /// Defaults: one slot per CPU, no labels, no root, no shell, a heartbeat
    /// every 5 s, 30 s to drain.
    pub fn new(coordinator: impl Into<String>) -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1);
        Self {
            coordinator: coordinator.into(),
            worker_id: None,
            slots: u32::try_from(cpus).unwrap_or(1),
            labels: BTreeMap::new(),
            root: None,
            allow_shell: false,
            heartbeat: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::new(format!("http://{}", volley_proto::DEFAULT_COORDINATOR_ADDR))
    }
}

/// Why a worker could not run. An unreachable coordinator is not one: the
/// worker keeps retrying until shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker config: {field}: {message}")]
    InvalidConfig {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// `<hostname>-<pid>-<4 random hex>`; the hostname from `/etc/hostname`, else
/// `$HOSTNAME`, else `worker`.
pub fn default_worker_id() -> String {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|text| !text.is_empty())
        })
        .unwrap_or_else(|| "worker".to_owned());
    let random = uuid::Uuid::now_v7().simple().to_string();
    let suffix = &random[random.len() - 4..];
    format!("{hostname}-{}-{suffix}", std::process::id())
}

fn validate(config: &WorkerConfig) -> Result<(), WorkerError> {
    if config.slots == 0 {
        return Err(WorkerError::InvalidConfig {
            field: "slots",
            message: "must be at least 1".to_owned(),
        });
    }
    if config.heartbeat.is_zero() {
        return Err(WorkerError::InvalidConfig {
            field: "heartbeat",
            message: "must be more than 0".to_owned(),
        });
    }
    if let Some(root) = &config.root {
        Root::new(root).map_err(|error| WorkerError::InvalidConfig {
            field: "root",
            message: error.to_string(),
        })?;
    }
    if let Some(worker_id) = &config.worker_id
        && worker_id.trim().is_empty()
    {
        return Err(WorkerError::InvalidConfig {
            field: "worker_id",
            message: "must not be empty".to_owned(),
        });
    }
    Ok(())
}

/// Serves the coordinator at `config.coordinator` with `registry`'s kinds
/// until `shutdown` fires, then drains: it takes no more work (assignments
/// arriving now are handed back with `ReturnOps`, reason "worker is
/// draining"), lets running ops finish and sends their results for up to
/// `config.drain_timeout`, then cancels the ops still running (killing their
/// process groups), hands them back too (reason "drain timeout"), closes its
/// stream and returns. While the
/// coordinator is unreachable it retries with backoff (100 ms → 5 s); when
/// the stream breaks it abandons running ops (the coordinator re-runs them)
/// and reconnects. Fails only on invalid config.
#[tracing::instrument(name = "volley.worker", skip_all, fields(worker))]
pub async fn run_worker(
    config: WorkerConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    validate(&config)?;
    let channel = lazy_channel(&config.coordinator)?;
    let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
    tracing::Span::current().record("worker", worker_id.as_str());
    let memory = Arc::new(GrpcMemory::new(channel.clone()));
    let spawner = Arc::new(GrpcSpawner::new(channel.clone()));
    let executor = Arc::new(
        Executor::new(registry, memory, config.root.clone(), config.allow_shell)
            .with_coordinator(config.coordinator.clone(), spawner),
    );
    tracing::info!(coordinator = %config.coordinator, slots = config.slots, kinds = ?executor.registry().advertised_kinds(), "worker starting");
    let params = SessionParams {
        worker_id,
        labels: config.labels.clone(),
        slots: config.slots,
        heartbeat: config.heartbeat,
        drain_timeout: config.drain_timeout,
        executor,
        shutdown: shutdown.clone(),
    };

    let mut backoff = BACKOFF_START;
    let mut failures: u32 = 0;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match run_session(channel.clone(), &params).await {
            Ok(SessionEnd::Shutdown) | Err(OpenError::Shutdown) => {
                tracing::info!("worker stopped");
                return Ok(());
            }
            Ok(SessionEnd::Broken { registered, reason }) => {
                if registered {
                    backoff = BACKOFF_START;
                    failures = 0;
                }
                tracing::warn!(%reason, retry_in = ?backoff, "coordinator stream ended; reconnecting");
            }
            Err(OpenError::Status(status)) => {
                failures += 1;
                if failures == 1 {
                    tracing::info!(coordinator = %config.coordinator, error = %status, retry_in = ?backoff, "coordinator unreachable; retrying");
                } else {
                    tracing::warn!(coordinator = %config.coordinator, error = %status, failures, retry_in = ?backoff, "coordinator still unreachable");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn default_worker_id_has_three_parts() {
        let worker_id = default_worker_id();
        let parts: Vec<&str> = worker_id.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{worker_id}");
        assert_eq!(parts[0].len(), 4);
        assert!(
            parts[0]
                .chars()
                .all(|character| character.is_ascii_hexdigit())
        );
        assert_eq!(parts[1], std::process::id().to_string());
    }

    #[tokio::test]
    async fn invalid_config_is_refused_before_connecting() {
        let registry = Registry::new();
        let mut config = WorkerConfig::new("http://127.0.0.1:1");
        config.slots = 0;
        let error = run_worker(config, registry.clone(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("slots"), "{error}");

        let mut config = WorkerConfig::new("http://127.0.0.1:1");
        config.root = Some(PathBuf::from("/definitely/not/here"));
        let error = run_worker(config, registry.clone(), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("root"), "{error}");

        let config = WorkerConfig::new("not a url");
        let error = run_worker(config, registry, CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(error, WorkerError::Connect(ConnectError::InvalidUrl { .. })),
            "{error}"
        );
    }

    #[tokio::test]
    async fn unreachable_coordinator_retries_until_shutdown() {
        // Port 1 on loopback refuses connections; the worker must keep trying, then stop on shutdown.
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            WorkerConfig::new("http://127.0.0.1:1"),
            Registry::new(),
            shutdown.clone(),
        ));
        tokio::task::yield_now().await;
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_ok());
    }
}
