//! One `WorkerService.Session` stream: register (listing ops still running), start and cancel ops, send results, heartbeat, drain.
//!
//! A session borrows the worker's [`WorkerOps`] and gives them back when its
//! stream ends, whole: ops keep running across sessions, and results this
//! session could not (or may not have managed to) deliver go to the next one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use volley_proto::v1::worker_service_client::WorkerServiceClient;
use volley_proto::v1::{
    Assignment, CoordinatorMessage, Heartbeat, Register, Results, ReturnOps, WorkerMessage,
    coordinator_message, worker_message,
};

use crate::grpc::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};
use crate::ops::{CANCEL_GRACE, OpKey, TakenResult, WorkerOps, result_size};

/// Messages queued toward the coordinator. Small on purpose: while the send
/// path is busy, results pile up in [`WorkerOps`] and leave together.
const OUTBOUND_CAPACITY: usize = 2;
/// Soft cap on one `Results` message, well below the gRPC limit.
const MAX_RESULTS_BYTES: usize = 8 * 1024 * 1024;
/// How long a finished session waits for the coordinator to close its side,
/// so the last results are flushed before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a sent result is kept to send again if the stream breaks. The
/// protocol has no acks, and a connection that died silently is only noticed
/// after a keep-alive interval and timeout: whatever went out in that time
/// may be lost. Twice that, to be safe; a duplicate is harmless.
const UNCONFIRMED_WINDOW: Duration = KEEP_ALIVE_INTERVAL
    .saturating_add(KEEP_ALIVE_TIMEOUT)
    .saturating_mul(2);
/// Cap on the results kept to send again (as [`result_size`] counts): past
/// it the oldest are let go, as most likely delivered.
const UNCONFIRMED_MAX_BYTES: usize = 8 * MAX_RESULTS_BYTES;
/// Cap on how many results are kept to send again: at high rates only the
/// most recent can still be in flight, and keeping a minute of them would
/// cost memory and copies proportional to the rate.
const UNCONFIRMED_MAX_RESULTS: usize = 4096;
/// Why assignments that arrive during a drain are handed back.
const REASON_DRAINING: &str = "worker is draining";
/// Why ops still running when the drain timeout passes are handed back.
const REASON_DRAIN_TIMEOUT: &str = "drain timeout";

/// What every session of a worker shares.
pub(crate) struct SessionParams {
    pub(crate) worker_id: String,
    pub(crate) kinds: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) slots: u32,
    pub(crate) heartbeat: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) shutdown: CancellationToken,
    /// Adds the worker's token to the session call.
    pub(crate) token: super::WorkerToken,
}

/// How a session that was opened ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// `shutdown` fired and the drain is over: every op reported or was
    /// handed back, and the coordinator closed its side.
    Drained,
    /// The stream broke. `registered` says whether the coordinator had
    /// accepted us. Ops keep running; unsent results wait in [`WorkerOps`].
    Broken { registered: bool, reason: String },
}

/// Why a session could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Status(tonic::Status),
    /// Shutdown fired (or, while draining, the drain deadline passed) before
    /// the stream opened.
    Stopped,
}

/// Opens a `Session` stream on `channel` and serves it with `ops` until it
/// breaks or, after `shutdown`, the drain is over.
#[tracing::instrument(name = "volley.WorkerService/Session", skip_all, fields(worker = %params.worker_id))]
pub(crate) async fn run_session(
    channel: Channel,
    params: &SessionParams,
    ops: &mut WorkerOps,
) -> Result<SessionEnd, OpenError> {
    let (outbound_tx, outbound_rx) = mpsc::channel::<WorkerMessage>(OUTBOUND_CAPACITY);
    let running = ops.held();
    if !running.is_empty() {
        tracing::info!(
            running = running.len(),
            "registering with ops from an earlier session"
        );
    }
    let register = Register {
        worker_id: params.worker_id.clone(),
        kinds: params.kinds.clone(),
        labels: params.labels.clone().into_iter().collect(),
        slots: params.slots,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        running,
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

    let mut client = WorkerServiceClient::with_interceptor(channel, params.token.clone())
        .max_decoding_message_size(volley_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(volley_proto::MAX_MESSAGE_BYTES);
    // Until shutdown; once draining, until the drain deadline (ops may still
    // have results to deliver or need handing back).
    let drain_deadline = ops.drain_deadline();
    let stop_connecting = async {
        match drain_deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => params.shutdown.cancelled().await,
        }
    };
    let response = tokio::select! {
        response = client.session(ReceiverStream::new(outbound_rx)) => response.map_err(OpenError::Status)?,
        () = stop_connecting => return Err(OpenError::Stopped),
    };
    let inbound = response.into_inner();
    tracing::debug!("stream open, registering");
    let end = Session::new(params, ops, outbound_tx, inbound)
        .serve()
        .await;
    crate::metrics::set_connected(false);
    Ok(end)
}

struct Session<'a> {
    params: &'a SessionParams,
    ops: &'a mut WorkerOps,
    outbound_tx: mpsc::Sender<WorkerMessage>,
    inbound: tonic::Streaming<CoordinatorMessage>,
    registered: bool,
    unconfirmed: Unconfirmed,
}

impl<'a> Session<'a> {
    fn new(
        params: &'a SessionParams,
        ops: &'a mut WorkerOps,
        outbound_tx: mpsc::Sender<WorkerMessage>,
        inbound: tonic::Streaming<CoordinatorMessage>,
    ) -> Self {
        Self {
            params,
            ops,
            outbound_tx,
            inbound,
            registered: false,
            unconfirmed: Unconfirmed::default(),
        }
    }

    async fn serve(mut self) -> SessionEnd {
        let every = self.params.heartbeat;
        // Not at once: Register just went out.
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said_draining = false;
        let broken_reason = loop {
            let draining = self.ops.is_draining();
            if draining && self.ops.is_idle() {
                break None;
            }
            if draining && !said_draining {
                // Said at once, not when the next assignment comes back:
                // the coordinator routes nothing more here and lists this
                // worker as draining while its ops finish.
                said_draining = true;
                if self
                    .outbound_tx
                    .send(return_ops(Vec::new(), REASON_DRAINING))
                    .await
                    .is_err()
                {
                    break Some("the stream's send side closed".to_owned());
                }
            }
            let has_outgoing = self.ops.has_interrupted() || self.ops.has_undelivered();
            // A coordinator that stops reading must not hold the drain open
            // forever: past the deadline and the cancel graces, give up on it.
            let give_up_at = self
                .ops
                .drain_deadline()
                .map(|deadline| deadline + CANCEL_GRACE * 2 + CLOSE_GRACE);
            let give_up = async move {
                match give_up_at {
                    Some(give_up_at) => tokio::time::sleep_until(give_up_at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = self.params.shutdown.cancelled(), if !draining => {
                    self.ops.begin_drain(self.params.drain_timeout);
                }
                () = self.ops.progress() => {}
                message = self.inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message).await,
                    Ok(None) => break Some("coordinator closed the stream".to_owned()),
                    Err(status) => break Some(format!("stream failed: {status}")),
                },
                // Reserved before a message is taken from `ops`: nothing
                // leaves them unless it can go out at once. (Owned, so the
                // other arms may borrow the session.)
                permit = self.outbound_tx.clone().reserve_owned(), if has_outgoing => match permit {
                    Ok(permit) => {
                        permit.send(next_outgoing(self.ops, &mut self.unconfirmed));
                    }
                    Err(_) => break Some("the stream's send side closed".to_owned()),
                },
                _ = heartbeat.tick() => self.heartbeat(),
                () = give_up => break Some("drain: the coordinator did not take the last messages in time".to_owned()),
            }
        };
        match broken_reason {
            None => self.close().await,
            Some(reason) => self.broken(reason),
        }
    }

    /// Acts on one coordinator message. While draining, assignments are
    /// handed straight back with `ReturnOps`.
    async fn handle(&mut self, message: CoordinatorMessage) {
        match message.msg {
            Some(coordinator_message::Msg::Registered(registered)) => {
                self.registered = true;
                crate::metrics::set_connected(true);
                tracing::info!(worker = %registered.worker_id, "registered with the coordinator");
            }
            Some(coordinator_message::Msg::Assignments(assignments)) => {
                if self.ops.is_draining() {
                    let refused = assignments
                        .assignments
                        .iter()
                        .map(OpKey::of_assignment)
                        .collect();
                    self.return_ops(refused, REASON_DRAINING).await;
                } else {
                    for assignment in assignments.assignments {
                        self.start(assignment);
                    }
                }
            }
            Some(coordinator_message::Msg::Cancel(cancel)) => {
                // Also for ops started in an earlier session: the coordinator
                // adopted them from our Register, or found them stale.
                for op in cancel.ops {
                    let key = OpKey::from_ref(op);
                    if self.ops.cancel(&key) {
                        tracing::info!(batch = %key.batch_id, op_index = key.op_index, attempt = key.attempt, "cancelling op");
                    } else {
                        tracing::debug!(batch = %key.batch_id, op_index = key.op_index, attempt = key.attempt, "cancel for an op not running here: ignored");
                    }
                }
            }
            None => tracing::debug!("empty coordinator message ignored"),
        }
    }

    fn start(&mut self, assignment: Assignment) {
        let running = self.ops.running_count();
        if running >= usize::try_from(self.params.slots).unwrap_or(usize::MAX) {
            tracing::warn!(
                running,
                slots = self.params.slots,
                "coordinator sent more ops than free slots"
            );
        }
        self.ops.start(assignment);
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
        if self
            .outbound_tx
            .send(return_ops(ops, reason))
            .await
            .is_err()
        {
            // The coordinator's lost-worker handling requeues them instead.
            tracing::warn!(reason, "ops not handed back: the stream closed");
        }
    }

    fn heartbeat(&mut self) {
        self.unconfirmed.forget_old(Instant::now());
        let heartbeat = WorkerMessage {
            msg: Some(worker_message::Msg::Heartbeat(Heartbeat {})),
        };
        // A full queue means traffic is flowing, which is as good as a
        // heartbeat; a closed one is noticed by the other arms.
        let _ = self.outbound_tx.try_send(heartbeat);
    }

    /// Drained: close our side (queued behind the last messages) and let the
    /// coordinator close its own; once it has, everything we sent arrived.
    async fn close(self) -> SessionEnd {
        let Session {
            ops,
            outbound_tx,
            mut inbound,
            registered,
            unconfirmed,
            ..
        } = self;
        drop(outbound_tx);
        let closed = tokio::time::timeout(CLOSE_GRACE, async {
            loop {
                match inbound.message().await {
                    // Nothing can be handed back any more: an assignment
                    // arriving now is left to the coordinator's lost-worker
                    // handling.
                    Ok(Some(CoordinatorMessage {
                        msg: Some(coordinator_message::Msg::Assignments(assignments)),
                    })) => tracing::warn!(
                        count = assignments.assignments.len(),
                        "assignments after the stream closed: not run"
                    ),
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(status),
                }
            }
        })
        .await;
        match closed {
            Ok(Ok(())) => {
                tracing::info!("drained");
                SessionEnd::Drained
            }
            Err(_elapsed) => {
                // The coordinator kept its side open; our messages were
                // flushed ahead of our close all the same.
                tracing::info!("drained (the coordinator did not close its side)");
                SessionEnd::Drained
            }
            Ok(Err(status)) => {
                drop(inbound);
                let resend = unconfirmed.requeue_into(ops);
                tracing::debug!(resend, "stream broke while closing");
                SessionEnd::Broken {
                    registered,
                    reason: format!("stream failed while closing: {status}"),
                }
            }
        }
    }

    /// The stream broke: ops keep running; results it may not have delivered
    /// go back to `ops`, to be sent (again) on the next session.
    fn broken(self, reason: String) -> SessionEnd {
        let Session {
            ops,
            outbound_tx,
            inbound,
            registered,
            unconfirmed,
            ..
        } = self;
        drop(inbound);
        drop(outbound_tx);
        let resend = unconfirmed.requeue_into(ops);
        tracing::debug!(%reason, resend, running = ops.running_count(), "stream lost");
        SessionEnd::Broken { registered, reason }
    }
}

/// What goes out next: ops to hand back first, else the oldest results,
/// coalesced up to [`MAX_RESULTS_BYTES`] and remembered in `unconfirmed`.
fn next_outgoing(ops: &mut WorkerOps, unconfirmed: &mut Unconfirmed) -> WorkerMessage {
    if ops.has_interrupted() {
        let interrupted = ops.take_interrupted();
        tracing::info!(
            count = interrupted.len(),
            reason = REASON_DRAIN_TIMEOUT,
            "handing ops back to the coordinator"
        );
        return return_ops(interrupted, REASON_DRAIN_TIMEOUT);
    }
    let taken = ops.take_results(MAX_RESULTS_BYTES);
    tracing::trace!(count = taken.len(), "sending results");
    let results = taken.iter().map(|taken| taken.result.clone()).collect();
    unconfirmed.remember(Instant::now(), taken);
    WorkerMessage {
        msg: Some(worker_message::Msg::Results(Results { results })),
    }
}

fn return_ops(ops: Vec<OpKey>, reason: &str) -> WorkerMessage {
    WorkerMessage {
        msg: Some(worker_message::Msg::ReturnOps(ReturnOps {
            ops: ops.into_iter().map(OpKey::into_ref).collect(),
            reason: reason.to_owned(),
        })),
    }
}

/// Results this session sent recently, oldest first: without acks, the ones
/// that may still be in flight when the stream breaks.
#[derive(Default)]
struct Unconfirmed {
    sent: VecDeque<(Instant, TakenResult)>,
    bytes: usize,
}

impl Unconfirmed {
    fn remember(&mut self, now: Instant, results: Vec<TakenResult>) {
        for taken in results {
            self.bytes += result_size(&taken.result);
            self.sent.push_back((now, taken));
        }
        self.forget_old(now);
    }

    /// Lets go of results sent longer ago than [`UNCONFIRMED_WINDOW`], and of
    /// the oldest past [`UNCONFIRMED_MAX_BYTES`] or [`UNCONFIRMED_MAX_RESULTS`].
    fn forget_old(&mut self, now: Instant) {
        while let Some((sent_at, taken)) = self.sent.front() {
            let expired = now.saturating_duration_since(*sent_at) > UNCONFIRMED_WINDOW;
            if !expired
                && self.bytes <= UNCONFIRMED_MAX_BYTES
                && self.sent.len() <= UNCONFIRMED_MAX_RESULTS
            {
                break;
            }
            self.bytes -= result_size(&taken.result);
            self.sent.pop_front();
        }
    }

    /// Hands every result back to `ops` to send again; returns how many.
    fn requeue_into(self, ops: &mut WorkerOps) -> usize {
        let count = self.sent.len();
        ops.requeue(self.sent.into_iter().map(|(_, taken)| taken));
        count
    }
}
