//! One `WorkerService.Session` stream: register, run assignments, send results in batches, heartbeat, drain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use volley_proto::v1::worker_service_client::WorkerServiceClient;
use volley_proto::v1::{
    Assignment, CoordinatorMessage, FailureKind, Heartbeat, OpRef, OpResult, Register, Results,
    ReturnOps, WorkerMessage, coordinator_message, worker_message,
};

use crate::executor::Executor;

/// Messages queued toward the coordinator. Small on purpose: while the send
/// path is busy, results pile up in the results channel and leave together.
const OUTBOUND_CAPACITY: usize = 2;
/// Soft cap on one `Results` message, well below the gRPC limit.
const MAX_RESULTS_BYTES: usize = 8 * 1024 * 1024;
/// How long a finished session waits for the coordinator to close its side,
/// so the last results are flushed before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long cancelled ops get to report before they are aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(2);
/// Why assignments that arrive during a drain are handed back.
const REASON_DRAINING: &str = "worker is draining";
/// Why ops still running when the drain timeout passes are handed back.
const REASON_DRAIN_TIMEOUT: &str = "drain timeout";

/// What a session needs that outlives it.
pub(crate) struct SessionParams {
    pub(crate) worker_id: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) slots: u32,
    pub(crate) heartbeat: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) executor: Arc<Executor>,
    pub(crate) shutdown: CancellationToken,
}

/// How a session that was opened ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// `shutdown` fired; running ops were drained and their results sent.
    Shutdown,
    /// The stream broke. `registered` says whether the coordinator had accepted us.
    Broken { registered: bool, reason: String },
}

/// Why a session could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Status(tonic::Status),
    Shutdown,
}

/// (batch id, op index, attempt): an op as the coordinator names it.
type OpKey = (String, u32, u32);

/// How an op task ended.
#[derive(Debug, PartialEq, Eq)]
enum OpEnd {
    /// Its result went to the results channel (or the session was gone).
    Reported,
    /// The drain timeout cancelled it: no result was sent, the session hands it back.
    Interrupted,
}

/// Opens a `Session` stream on `channel` and serves it until it breaks or `shutdown` fires.
#[tracing::instrument(name = "volley.WorkerService/Session", skip_all, fields(worker = %params.worker_id))]
pub(crate) async fn run_session(
    channel: Channel,
    params: &SessionParams,
) -> Result<SessionEnd, OpenError> {
    let (outbound_tx, outbound_rx) = mpsc::channel::<WorkerMessage>(OUTBOUND_CAPACITY);
    let register = Register {
        worker_id: params.worker_id.clone(),
        kinds: params.executor.registry().advertised_kinds(),
        labels: params.labels.clone().into_iter().collect(),
        slots: params.slots,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        running: Vec::new(),
    };
    // Queued before the call: a coordinator may wait for Register before answering.
    outbound_tx
        .send(WorkerMessage {
            msg: Some(worker_message::Msg::Register(register)),
        })
        .await
        .map_err(|_| {
            OpenError::Status(tonic::Status::internal(
                "outbound queue closed before register",
            ))
        })?;

    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(volley_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(volley_proto::MAX_MESSAGE_BYTES);
    let response = tokio::select! {
        response = client.session(ReceiverStream::new(outbound_rx)) => response.map_err(OpenError::Status)?,
        () = params.shutdown.cancelled() => return Err(OpenError::Shutdown),
    };
    let inbound = response.into_inner();
    tracing::debug!("stream open, registering");
    Ok(Session::new(params, outbound_tx, inbound).serve().await)
}

struct Session<'a> {
    params: &'a SessionParams,
    outbound_tx: mpsc::Sender<WorkerMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
    inbound_open: bool,
    registered: bool,
    /// Result sender each op task clones; dropped at the end so the sender task finishes.
    result_tx: Option<mpsc::Sender<OpResult>>,
    /// The results sender and the heartbeat.
    helpers: JoinSet<()>,
    helpers_cancel: CancellationToken,
    /// Every running op; each returns its key when it finishes.
    ops: JoinSet<(OpKey, OpEnd)>,
    /// Parent of every op's token: cancelling it cancels them all.
    ops_cancel: CancellationToken,
    /// Fired (before `ops_cancel`) when the drain timeout passes, so op
    /// tasks know a cancel is the drain's and not the coordinator's.
    drain_expired: CancellationToken,
    /// Running ops and the token the coordinator's `CancelOps` fires.
    running: HashMap<OpKey, CancellationToken>,
    /// Ops the drain timeout interrupted, to hand back.
    interrupted: Vec<OpKey>,
}

impl<'a> Session<'a> {
    fn new(
        params: &'a SessionParams,
        outbound_tx: mpsc::Sender<WorkerMessage>,
        inbound: tonic::Streaming<CoordinatorMessage>,
    ) -> Self {
        // Room for a result from every slot; an op blocks on a full channel, never drops.
        let result_capacity = usize::try_from(params.slots)
            .unwrap_or(usize::MAX)
            .clamp(1, 4096)
            * 2;
        let (result_tx, result_rx) = mpsc::channel::<OpResult>(result_capacity);
        let helpers_cancel = CancellationToken::new();
        let mut helpers = JoinSet::new();
        helpers.spawn(send_results(result_rx, outbound_tx.clone()));
        helpers.spawn(send_heartbeats(
            outbound_tx.clone(),
            params.heartbeat,
            helpers_cancel.clone(),
        ));
        Self {
            params,
            outbound_tx,
            inbound,
            inbound_open: true,
            registered: false,
            result_tx: Some(result_tx),
            helpers,
            helpers_cancel,
            ops: JoinSet::new(),
            ops_cancel: CancellationToken::new(),
            drain_expired: CancellationToken::new(),
            running: HashMap::new(),
            interrupted: Vec::new(),
        }
    }

    async fn serve(mut self) -> SessionEnd {
        let broken_reason = loop {
            tokio::select! {
                biased;
                () = self.params.shutdown.cancelled() => break None,
                Some(joined) = self.ops.join_next(), if !self.ops.is_empty() => self.reap(joined),
                message = self.inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message, true).await,
                    Ok(None) => break Some("coordinator closed the stream".to_owned()),
                    Err(status) => break Some(format!("stream failed: {status}")),
                },
            }
        };
        match broken_reason {
            None => {
                self.drain().await;
                SessionEnd::Shutdown
            }
            Some(reason) => {
                self.abandon(&reason).await;
                SessionEnd::Broken {
                    registered: self.registered,
                    reason,
                }
            }
        }
    }

    /// Acts on one coordinator message. Not `accepting` (draining):
    /// assignments are handed straight back with `ReturnOps`.
    async fn handle(&mut self, message: CoordinatorMessage, accepting: bool) {
        match message.msg {
            Some(coordinator_message::Msg::Registered(registered)) => {
                self.registered = true;
                tracing::info!(worker = %registered.worker_id, "registered with the coordinator");
            }
            Some(coordinator_message::Msg::Assignments(assignments)) => {
                if accepting {
                    for assignment in assignments.assignments {
                        self.start(assignment);
                    }
                } else {
                    let refused = assignments
                        .assignments
                        .into_iter()
                        .map(|assignment| {
                            (assignment.batch_id, assignment.op_index, assignment.attempt)
                        })
                        .collect();
                    self.return_ops(refused, REASON_DRAINING).await;
                }
            }
            Some(coordinator_message::Msg::Cancel(cancel)) => {
                for op in cancel.ops {
                    let key = (op.batch_id, op.op_index, op.attempt);
                    if let Some(token) = self.running.get(&key) {
                        tracing::info!(batch = %key.0, op_index = key.1, attempt = key.2, "cancelling op");
                        token.cancel();
                    }
                }
            }
            None => tracing::debug!("empty coordinator message ignored"),
        }
    }

    fn start(&mut self, assignment: Assignment) {
        let Some(result_tx) = self.result_tx.clone() else {
            return;
        };
        let key: OpKey = (
            assignment.batch_id.clone(),
            assignment.op_index,
            assignment.attempt,
        );
        if self.running.len() >= usize::try_from(self.params.slots).unwrap_or(usize::MAX) {
            tracing::warn!(
                running = self.running.len(),
                slots = self.params.slots,
                "coordinator sent more ops than free slots"
            );
        }
        // Two ways to stop an op: the coordinator's cancel (its own token) and
        // the drain's (the parent of every op's token).
        let coordinator_cancel = CancellationToken::new();
        self.running.insert(key.clone(), coordinator_cancel.clone());
        let op_cancel = self.ops_cancel.child_token();
        let drain_expired = self.drain_expired.clone();
        let executor = Arc::clone(&self.params.executor);
        self.ops.spawn(async move {
            let run = executor.run(assignment, op_cancel.clone());
            tokio::pin!(run);
            let result = tokio::select! {
                biased;
                result = &mut run => result,
                () = coordinator_cancel.cancelled() => {
                    op_cancel.cancel();
                    run.await
                }
            };
            // Cut short by the drain, not by the coordinator: the op did not
            // really fail, so it goes back to the queue instead.
            if result.failure_kind() == FailureKind::Cancelled
                && drain_expired.is_cancelled()
                && !coordinator_cancel.is_cancelled()
            {
                return (key, OpEnd::Interrupted);
            }
            if result_tx.send(result).await.is_err() {
                tracing::warn!(batch = %key.0, op_index = key.1, "result dropped: the session ended first");
            }
            (key, OpEnd::Reported)
        });
    }

    /// Hands `ops` back to the coordinator (`ReturnOps`): it requeues them at
    /// once without counting an attempt.
    async fn return_ops(&self, ops: Vec<OpKey>, reason: &str) {
        if ops.is_empty() {
            return;
        }
        tracing::info!(
            count = ops.len(),
            reason,
            "handing ops back to the coordinator"
        );
        let ops = ops
            .into_iter()
            .map(|(batch_id, op_index, attempt)| OpRef {
                batch_id,
                op_index,
                attempt,
            })
            .collect();
        let message = WorkerMessage {
            msg: Some(worker_message::Msg::ReturnOps(ReturnOps {
                ops,
                reason: reason.to_owned(),
            })),
        };
        if self.outbound_tx.send(message).await.is_err() {
            tracing::warn!(reason, "ops not handed back: the stream closed");
        }
    }

    fn reap(&mut self, joined: Result<(OpKey, OpEnd), tokio::task::JoinError>) {
        match joined {
            Ok((key, end)) => {
                self.running.remove(&key);
                if end == OpEnd::Interrupted {
                    self.interrupted.push(key);
                }
            }
            Err(error) => tracing::error!(%error, "op task failed"),
        }
    }

    /// Shutdown: take no more work (assignments arriving now are handed
    /// back), let running ops finish and report (up to `drain_timeout`),
    /// then cancel the rest and hand them back, and finally close our side
    /// and let the coordinator close its own.
    async fn drain(mut self) {
        tracing::info!(running = self.ops.len(), drain_timeout = ?self.params.drain_timeout, "draining");
        let deadline = tokio::time::sleep(self.params.drain_timeout);
        tokio::pin!(deadline);
        let mut expired = false;
        loop {
            tokio::select! {
                biased;
                joined = self.ops.join_next() => match joined {
                    Some(joined) => self.reap(joined),
                    None => break,
                },
                () = &mut deadline => {
                    if expired {
                        // Cancelled ops that still have not ended (a handler
                        // blocking its thread): stop waiting for them.
                        tracing::warn!(running = self.ops.len(), "ops ignored cancel: aborting them");
                        self.ops.abort_all();
                        while let Some(joined) = self.ops.join_next().await {
                            self.reap(joined);
                        }
                        break;
                    }
                    expired = true;
                    tracing::warn!(running = self.ops.len(), "drain timeout: cancelling running ops");
                    // Tell the tasks first, so each sees its cancel was the drain's.
                    self.drain_expired.cancel();
                    self.ops_cancel.cancel();
                    deadline.as_mut().reset(tokio::time::Instant::now() + CANCEL_GRACE);
                }
                message = self.inbound.message(), if self.inbound_open => match message {
                    Ok(Some(message)) => self.handle(message, false).await,
                    Ok(None) | Err(_) => self.inbound_open = false,
                },
            }
        }
        // Interrupted ops, and any aborted before they could say so.
        let mut interrupted = std::mem::take(&mut self.interrupted);
        interrupted.extend(self.running.drain().map(|(key, _)| key));
        self.return_ops(interrupted, REASON_DRAIN_TIMEOUT).await;
        // Every op task is done, so dropping ours closes the results channel:
        // the sender flushes what is left and finishes.
        self.result_tx = None;
        self.helpers_cancel.cancel();
        while self.helpers.join_next().await.is_some() {}
        let Session {
            outbound_tx,
            mut inbound,
            inbound_open,
            ..
        } = self;
        drop(outbound_tx);
        if inbound_open {
            // Our half-close is queued behind the last results; once the
            // coordinator ends its side, everything we sent has arrived.
            // Nothing can be handed back any more: an assignment arriving now
            // is left to the coordinator's lost-worker handling.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Ok(Some(message)) = inbound.message().await {
                    if let Some(coordinator_message::Msg::Assignments(assignments)) = message.msg {
                        tracing::warn!(
                            count = assignments.assignments.len(),
                            "assignments after the stream closed: not run"
                        );
                    }
                }
            })
            .await;
        }
        tracing::info!("drained");
    }

    /// The stream broke: results can no longer be delivered, and the
    /// coordinator will run these ops again, so stop them now.
    async fn abandon(&mut self, reason: &str) {
        let running = self.ops.len();
        if running > 0 {
            tracing::warn!(
                running,
                reason,
                "stream lost: abandoning running ops, the coordinator will re-run them"
            );
        } else {
            tracing::warn!(reason, "stream lost");
        }
        self.ops_cancel.cancel();
        self.ops.abort_all();
        while self.ops.join_next().await.is_some() {}
        self.helpers_cancel.cancel();
        self.helpers.abort_all();
        while self.helpers.join_next().await.is_some() {}
    }
}

/// Sends results as they finish, coalescing: it waits for one result, then
/// for the send path to be free, then takes everything buffered by then.
async fn send_results(
    mut result_rx: mpsc::Receiver<OpResult>,
    outbound_tx: mpsc::Sender<WorkerMessage>,
) {
    let mut pending: Option<OpResult> = None;
    loop {
        let first = match pending.take() {
            Some(result) => result,
            None => match result_rx.recv().await {
                Some(result) => result,
                None => return,
            },
        };
        let Ok(permit) = outbound_tx.reserve().await else {
            tracing::warn!("results dropped: the stream closed");
            return;
        };
        let mut bytes = result_size(&first);
        let mut results = vec![first];
        while let Ok(result) = result_rx.try_recv() {
            let size = result_size(&result);
            if bytes + size > MAX_RESULTS_BYTES {
                pending = Some(result);
                break;
            }
            bytes += size;
            results.push(result);
        }
        tracing::trace!(count = results.len(), "sending results");
        permit.send(WorkerMessage {
            msg: Some(worker_message::Msg::Results(Results { results })),
        });
    }
}

fn result_size(result: &OpResult) -> usize {
    result.output.len()
        + result.error.len()
        + result.details_json.len()
        + result.batch_id.len()
        + 32
}

async fn send_heartbeats(
    outbound_tx: mpsc::Sender<WorkerMessage>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate; Register just went out
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {
                let heartbeat = WorkerMessage { msg: Some(worker_message::Msg::Heartbeat(Heartbeat {})) };
                // A full queue means traffic is flowing, which is as good as a heartbeat.
                if let Err(mpsc::error::TrySendError::Closed(_)) = outbound_tx.try_send(heartbeat) {
                    return;
                }
            }
        }
    }
}
