//! The worker's life: validate config, connect (with backoff), serve sessions, reconnect with ops still running, drain on shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::confine::Root;
use crate::executor::Executor;
use crate::grpc::session::{OpenError, SessionEnd, SessionParams, run_session};
use crate::grpc::{ConnectError, GrpcMemory, GrpcSpawner, lazy_channel, worker_token};
use crate::ops::WorkerOps;
use crate::registry::Registry;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a worker connects and what it offers.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's URL, e.g. [`volley_proto::DEFAULT_COORDINATOR_URL`].
    pub coordinator: String,
    /// Defaults to `<hostname>-<pid>-<4 hex>` ([`default_worker_id`]).
    pub worker_id: Option<String>,
    /// Ops run at once; the coordinator never assigns more.
    pub slots: u32,
    /// Matched against ops' `requires`.
    pub labels: BTreeMap<String, String>,
    /// What handlers see as their root (give the built-ins' `BuiltinConfig` the same).
    pub root: Option<PathBuf>,
    /// What handlers see as `allow_shell` (give the built-ins' `BuiltinConfig` the same).
    pub allow_shell: bool,
    pub heartbeat: Duration,
    /// On shutdown, how long running ops may take to finish before they are
    /// cancelled and handed back to the coordinator (`ReturnOps`).
    pub drain_timeout: Duration,
    /// Sent as `authorization: Bearer` on the worker's session (a worker or
    /// admin token); `None` against a coordinator without authentication.
    pub token: Option<String>,
    /// TLS toward the coordinator (`https://` URLs).
    pub tls: volley_tls::ClientTlsFiles,
    /// The most bytes any op's output may hold (an op's `max_output` may
    /// ask for less): past it the op fails, and the stream stays up.
    pub max_output: usize,
}

impl WorkerConfig {
    /// How often the worker tells the coordinator it is alive, by default.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
    /// How long running ops may take to finish on shutdown, by default.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

    /// Defaults: one slot per CPU, no labels, no root, no shell, a heartbeat
    /// every [`Self::DEFAULT_HEARTBEAT`], [`Self::DEFAULT_DRAIN_TIMEOUT`] to
    /// drain.
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
            heartbeat: Self::DEFAULT_HEARTBEAT,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            token: None,
            tls: volley_tls::ClientTlsFiles::default(),
            max_output: crate::DEFAULT_MAX_OUTPUT,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::new(volley_proto::DEFAULT_COORDINATOR_URL)
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
    /// The coordinator refused the worker's token: none, unknown, expired
    /// or revoked (`Unauthenticated`), or a role that may not run a worker
    /// or labels and kinds the token does not allow (`PermissionDenied`).
    /// Retrying cannot help, so the worker stops.
    #[error("the coordinator refused this worker: {message}")]
    Refused { code: tonic::Code, message: String },
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
/// stream and returns.
///
/// While the coordinator is unreachable it retries with backoff (100 ms →
/// 5 s). Running ops outlive the stream: when it breaks they carry on, and
/// the worker reconnects (perhaps to another coordinator behind the same
/// address), lists them in `Register.running` so the coordinator adopts
/// them (or cancels stale ones), and sends the results that finished in the
/// meantime, as well as those sent just before the break (a coordinator may
/// get a result twice, never zero times). A shutdown while disconnected
/// keeps reconnecting to deliver results and hand ops back until the drain
/// timeout; if no coordinator answers by then, the ops still running are
/// cancelled and the worker returns. Fails only on invalid config.
#[tracing::instrument(name = "volley.worker", skip_all, fields(worker))]
pub async fn run_worker(
    config: WorkerConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    validate(&config)?;
    let channel = lazy_channel(&config.coordinator, &config.tls)?;
    let worker_token = worker_token(config.token.as_deref())?;
    let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
    tracing::Span::current().record("worker", worker_id.as_str());
    let memory = Arc::new(GrpcMemory::new(channel.clone()));
    let spawner = Arc::new(GrpcSpawner::new(channel.clone()));
    let kinds = registry.advertised_kinds();
    let executor = Arc::new(
        Executor::new(registry, memory, config.root.clone(), config.allow_shell)
            .with_coordinator(config.coordinator.clone(), spawner)
            .with_worker_id(worker_id.as_str())
            .with_max_output(config.max_output),
    );
    tracing::info!(coordinator = %config.coordinator, slots = config.slots, ?kinds, "worker starting");
    let params = SessionParams {
        worker_id,
        kinds,
        labels: config.labels.clone(),
        slots: config.slots,
        heartbeat: config.heartbeat,
        drain_timeout: config.drain_timeout,
        shutdown: shutdown.clone(),
        token: worker_token,
    };
    // Outlives every session: the ops and the results owed a coordinator.
    let mut ops = WorkerOps::new(executor).with_slot_gauges(config.slots);
    crate::metrics::set_connected(false);
    crate::metrics::set_draining(false);

    let mut backoff = BACKOFF_START;
    let mut failures: u32 = 0;
    loop {
        if shutdown.is_cancelled() {
            if ops.is_idle() {
                tracing::info!("worker stopped");
                return Ok(());
            }
            ops.begin_drain(config.drain_timeout);
            if ops.drain_expired() {
                stop_unreachable(&mut ops).await;
                return Ok(());
            }
        }
        match run_session(channel.clone(), &params, &mut ops).await {
            Ok(SessionEnd::Drained) => {
                tracing::info!("worker stopped");
                return Ok(());
            }
            Ok(SessionEnd::Broken { registered, reason }) => {
                if registered {
                    backoff = BACKOFF_START;
                    failures = 0;
                }
                tracing::warn!(
                    %reason,
                    running = ops.running_count(),
                    undelivered = ops.undelivered_count(),
                    retry_in = ?backoff,
                    "coordinator stream ended; ops carry on, reconnecting"
                );
            }
            Err(OpenError::Status(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                tracing::error!(coordinator = %config.coordinator, error = %status, "the coordinator refused this worker's token; stopping");
                stop_unreachable(&mut ops).await;
                return Err(WorkerError::Refused {
                    code: status.code(),
                    message: status.message().to_owned(),
                });
            }
            Err(OpenError::Status(status)) => {
                failures += 1;
                if failures == 1 {
                    tracing::info!(coordinator = %config.coordinator, error = %status, retry_in = ?backoff, "coordinator unreachable; retrying");
                } else {
                    tracing::warn!(coordinator = %config.coordinator, error = %status, failures, retry_in = ?backoff, "coordinator still unreachable");
                }
            }
            // Shutdown fired, or the drain deadline passed: decide above.
            Err(OpenError::Stopped) => continue,
        }
        // Back off. Ops keep running meanwhile, their results are kept, and
        // the drain's clock (if any) keeps ticking.
        let retry_at = tokio::time::Instant::now() + backoff;
        loop {
            let draining = ops.is_draining();
            tokio::select! {
                biased;
                // Shutdown: stop now if nothing is owed, else start the drain
                // and reconnect at once to finish it.
                () = shutdown.cancelled(), if !draining => break,
                () = ops.progress() => {
                    if ops.drain_expired() {
                        break;
                    }
                }
                () = tokio::time::sleep_until(retry_at) => break,
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The drain timeout passed with no coordinator reachable: cancel what still
/// runs (killing process groups) and give up on what is owed.
async fn stop_unreachable(ops: &mut WorkerOps) {
    let running = ops.running_count();
    ops.stop_all().await;
    tracing::warn!(
        cancelled = running,
        undelivered = ops.undelivered_count(),
        "drain timeout and no coordinator reachable: ops cancelled, results and hand-backs not delivered"
    );
    tracing::info!("worker stopped");
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
            matches!(error, WorkerError::Connect(ConnectError::Tls { .. })),
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

    // ---- ops across sessions, against a fake coordinator ----

    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::{Semaphore, mpsc};
    use tokio_stream::wrappers::TcpListenerStream;
    use volley_proto::v1::worker_service_server::WorkerServiceServer;
    use volley_proto::v1::{Assignment, CancelOps, FailureKind, OpRef, coordinator_message};
    use volley_testkit::fake_coordinator::{FakeSession, FakeSessions, FakeWorkerService};

    use crate::handler::{OpOutput, handler_fn};

    /// A hang guard, never a timing assertion.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A fake coordinator's `WorkerService` (volley-testkit) served on a
    /// free port.
    struct Harness {
        url: String,
        sessions: FakeSessions,
        server_shutdown: CancellationToken,
        server: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let (service, sessions) = FakeWorkerService::new();
            let server_shutdown = CancellationToken::new();
            let signal = server_shutdown.clone().cancelled_owned();
            let server = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(WorkerServiceServer::new(service))
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
                    .await
                    .unwrap();
            });
            Self {
                url,
                sessions,
                server_shutdown,
                server,
            }
        }

        async fn next_session(&mut self) -> FakeSession {
            self.sessions.next().await
        }

        fn refuse(&self, refusing: bool) {
            self.sessions.refuse(refusing);
        }

        /// Waits until the worker was turned away: it knows it is disconnected.
        async fn wait_refused(&mut self) {
            self.sessions.wait_refused().await;
        }

        async fn stop(self, worker: tokio::task::JoinHandle<Result<(), WorkerError>>) {
            tokio::time::timeout(DEADLINE, worker)
                .await
                .expect("the worker did not stop before the deadline")
                .unwrap()
                .unwrap();
            self.server_shutdown.cancel();
            self.server.await.unwrap();
        }
    }

    /// Ops of kind `held`: each says it started, then waits until the test
    /// releases it (by op index); one dropped before it finished (cancelled)
    /// says so too.
    struct HeldOps {
        gates: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>,
        started: mpsc::UnboundedReceiver<u32>,
        stopped: mpsc::UnboundedReceiver<u32>,
    }

    /// Tells `stopped` if dropped before `finished` is set.
    struct StopGuard {
        op_index: u32,
        stopped: mpsc::UnboundedSender<u32>,
        finished: bool,
    }

    impl Drop for StopGuard {
        fn drop(&mut self) {
            if !self.finished {
                let _ = self.stopped.send(self.op_index);
            }
        }
    }

    fn gate(gates: &Mutex<HashMap<u32, Arc<Semaphore>>>, op_index: u32) -> Arc<Semaphore> {
        Arc::clone(
            gates
                .lock()
                .unwrap()
                .entry(op_index)
                .or_insert_with(|| Arc::new(Semaphore::new(0))),
        )
    }

    impl HeldOps {
        /// `noop`, `echo`, `sleep` (as the built-ins) plus `held`.
        fn registry() -> (Registry, Self) {
            let gates: Arc<Mutex<HashMap<u32, Arc<Semaphore>>>> = Arc::default();
            let (started_tx, started) = mpsc::unbounded_channel();
            let (stopped_tx, stopped) = mpsc::unbounded_channel();
            let mut registry = crate::test_kinds::registry();
            let handler_gates = Arc::clone(&gates);
            registry.register(
                "held",
                handler_fn(move |ctx, _args| {
                    let gate = gate(&handler_gates, ctx.op_index());
                    let started = started_tx.clone();
                    let stopped = stopped_tx.clone();
                    async move {
                        let mut guard = StopGuard {
                            op_index: ctx.op_index(),
                            stopped,
                            finished: false,
                        };
                        let _ = started.send(ctx.op_index());
                        gate.acquire().await.expect("gates stay open").forget();
                        guard.finished = true;
                        Ok(OpOutput::text(format!("op {} finished", ctx.op_index())))
                    }
                }),
            );
            let held = Self {
                gates,
                started,
                stopped,
            };
            (registry, held)
        }

        fn release(&self, op_index: u32) {
            gate(&self.gates, op_index).add_permits(1);
        }

        /// Waits until the ops `op_indexes` all started.
        async fn wait_started(&mut self, op_indexes: &[u32]) {
            let mut started = Vec::new();
            tokio::time::timeout(DEADLINE, async {
                while !op_indexes.iter().all(|index| started.contains(index)) {
                    started.push(self.started.recv().await.unwrap());
                }
            })
            .await
            .expect("ops did not start before the deadline");
        }

        async fn wait_stopped(&mut self) -> u32 {
            tokio::time::timeout(DEADLINE, self.stopped.recv())
                .await
                .expect("no op was stopped before the deadline")
                .unwrap()
        }
    }

    fn held(op_index: u32) -> Assignment {
        Assignment {
            batch_id: "batch-1".into(),
            op_index,
            op_id: format!("op{op_index}"),
            kind: "held".into(),
            attempt: 1,
            ..Assignment::default()
        }
    }

    fn op_ref(op_index: u32) -> OpRef {
        OpRef {
            batch_id: "batch-1".into(),
            op_index,
            attempt: 1,
            ticket: String::new(),
        }
    }

    fn test_config(url: &str) -> WorkerConfig {
        let mut config = WorkerConfig::new(url);
        config.worker_id = Some("test-worker".into());
        config.slots = 4;
        config.drain_timeout = Duration::from_secs(60);
        config
    }

    #[tokio::test]
    async fn ops_outlive_a_broken_stream_and_report_on_the_next_session() {
        let mut harness = Harness::start().await;
        let (registry, mut held_ops) = HeldOps::registry();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            test_config(&harness.url),
            registry,
            shutdown.clone(),
        ));
        let first = harness.next_session().await;
        assert!(first.register.running.is_empty());
        first.assign(vec![held(0), held(1)]).await;
        held_ops.wait_started(&[0, 1]).await;

        // The coordinator goes away and nobody answers for a while; op 0
        // finishes meanwhile, op 1 is still running when one answers again.
        harness.refuse(true);
        first.cut().await;
        harness.wait_refused().await;
        held_ops.release(0);
        harness.refuse(false);

        let mut second = harness.next_session().await;
        assert_eq!(second.register.worker_id, "test-worker");
        assert_eq!(second.register.slots, 4, "total slots, not free ones");
        assert_eq!(second.register.running, [op_ref(0), op_ref(1)]);
        let results = second.results(1).await;
        assert_eq!(
            (
                results[0].op_index,
                results[0].ok,
                results[0].output.as_str()
            ),
            (0, true, "op 0 finished")
        );
        held_ops.release(1);
        let results = second.results(1).await;
        assert_eq!(
            (
                results[0].op_index,
                results[0].ok,
                results[0].output.as_str()
            ),
            (1, true, "op 1 finished")
        );
        assert!(
            held_ops.stopped.try_recv().is_err(),
            "no op was cancelled by the break"
        );

        shutdown.cancel();
        let (results, returned) = second.until_closed().await;
        assert!(
            results.is_empty() && returned.is_empty(),
            "{results:?} {returned:?}"
        );
        harness.stop(worker).await;
    }

    #[tokio::test]
    async fn a_result_sent_just_before_the_stream_broke_is_sent_again() {
        let mut harness = Harness::start().await;
        let (registry, _held_ops) = HeldOps::registry();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            test_config(&harness.url),
            registry,
            shutdown.clone(),
        ));
        let mut first = harness.next_session().await;
        let mut echo = held(0);
        echo.kind = "echo".into();
        echo.args_json = serde_json::json!({"text": "hello"}).to_string();
        echo.lease_ticket = "ticket-0".into();
        first.assign(vec![echo]).await;
        assert_eq!(first.results(1).await[0].output, "hello");
        // Without acks the worker cannot know this result was processed.
        first.cut().await;

        let mut second = harness.next_session().await;
        // With its lease ticket: without it a coordinator refuses to adopt
        // the op, then refuses its result, and the op runs again.
        assert_eq!(
            second.register.running,
            [OpRef {
                ticket: "ticket-0".into(),
                ..op_ref(0)
            }]
        );
        let results = second.results(1).await;
        assert_eq!(
            (results[0].op_index, results[0].output.as_str()),
            (0, "hello")
        );

        shutdown.cancel();
        second.until_closed().await;
        harness.stop(worker).await;
    }

    #[tokio::test]
    async fn cancel_on_a_new_session_stops_an_adopted_op() {
        let mut harness = Harness::start().await;
        let (registry, mut held_ops) = HeldOps::registry();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            test_config(&harness.url),
            registry,
            shutdown.clone(),
        ));
        let first = harness.next_session().await;
        first.assign(vec![held(0), held(1)]).await;
        held_ops.wait_started(&[0, 1]).await;
        first.cut().await;

        let mut second = harness.next_session().await;
        assert_eq!(second.register.running, [op_ref(0), op_ref(1)]);
        second
            .send(coordinator_message::Msg::Cancel(CancelOps {
                ops: vec![op_ref(1)],
            }))
            .await;
        let results = second.results(1).await;
        assert_eq!(results[0].op_index, 1);
        assert!(!results[0].ok);
        assert_eq!(results[0].error, "cancelled");
        assert_eq!(results[0].failure_kind(), FailureKind::Cancelled);
        assert_eq!(held_ops.wait_stopped().await, 1);
        // The other adopted op is untouched and still reports.
        held_ops.release(0);
        let results = second.results(1).await;
        assert_eq!((results[0].op_index, results[0].ok), (0, true));

        shutdown.cancel();
        second.until_closed().await;
        harness.stop(worker).await;
    }

    #[tokio::test]
    async fn a_shutdown_while_disconnected_reconnects_to_deliver_results() {
        let mut harness = Harness::start().await;
        let (registry, mut held_ops) = HeldOps::registry();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run_worker(
            test_config(&harness.url),
            registry,
            shutdown.clone(),
        ));
        let first = harness.next_session().await;
        first.assign(vec![held(0)]).await;
        held_ops.wait_started(&[0]).await;
        harness.refuse(true);
        first.cut().await;
        harness.wait_refused().await;
        shutdown.cancel();
        held_ops.release(0);
        harness.refuse(false);

        // The worker comes back only to report, then closes.
        let second = harness.next_session().await;
        assert_eq!(second.register.running, [op_ref(0)]);
        let (results, returned) = second.until_closed().await;
        // It says at once that it drains (a hand-back of nothing), and
        // hands nothing back: its op finished.
        assert_eq!(returned.len(), 1, "{returned:?}");
        assert!(returned[0].ops.is_empty(), "{returned:?}");
        assert_eq!(returned[0].reason, "worker is draining");
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(
            (
                results[0].op_index,
                results[0].ok,
                results[0].output.as_str()
            ),
            (0, true, "op 0 finished")
        );
        harness.stop(worker).await;
    }

    #[tokio::test]
    async fn a_shutdown_with_no_coordinator_cancels_ops_at_the_drain_timeout() {
        let mut harness = Harness::start().await;
        let (registry, mut held_ops) = HeldOps::registry();
        let shutdown = CancellationToken::new();
        let mut config = test_config(&harness.url);
        config.drain_timeout = Duration::from_millis(200);
        let worker = tokio::spawn(run_worker(config, registry, shutdown.clone()));
        let first = harness.next_session().await;
        first.assign(vec![held(0)]).await;
        held_ops.wait_started(&[0]).await;
        harness.refuse(true);
        first.cut().await;
        harness.wait_refused().await;
        shutdown.cancel();

        // Nobody answers: the op is cancelled and the worker stops anyway.
        assert_eq!(held_ops.wait_stopped().await, 0);
        harness.stop(worker).await;
    }
}
