//! The worker's metrics, through the `metrics` facade: no-ops until a binary installs a recorder.
//!
//! Names follow `volley_worker_<what>_<unit>`. [`describe`] gives each its
//! HELP text; the binary calls it once after installing its recorder. The
//! per-op updates go through handles made once per kind when the executor
//! is built ([`OpMetrics`]), so recording an op is a map lookup and a few
//! atomic adds.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use volley_proto::v1::{FailureKind, OpResult};

pub const SLOTS: &str = "volley_worker_slots";
pub const OPS_TOTAL: &str = "volley_worker_ops_total";
pub const OP_DURATION_SECONDS: &str = "volley_worker_op_duration_seconds";
pub const CONNECTED: &str = "volley_worker_connected";
pub const DRAINING: &str = "volley_worker_draining";

/// Gives every worker metric its HELP text. Call once, after the recorder
/// is installed.
pub fn describe() {
    metrics::describe_gauge!(SLOTS, "The worker's slots: busy (an op running) or free.");
    metrics::describe_counter!(
        OPS_TOTAL,
        "Ops this worker ran to an end, by kind and outcome (succeeded, failed, timeout, cancelled)."
    );
    metrics::describe_histogram!(
        OP_DURATION_SECONDS,
        "Seconds an op ran on this worker (its handler, from start to result), by kind."
    );
    metrics::describe_gauge!(
        CONNECTED,
        "1 while the worker is registered with a coordinator, else 0."
    );
    metrics::describe_gauge!(
        DRAINING,
        "1 once the worker drains (it takes no more work), else 0."
    );
}

/// Handles of one kind's op metrics.
struct KindMetrics {
    succeeded: Counter,
    failed: Counter,
    timeout: Counter,
    cancelled: Counter,
    duration: Histogram,
}

impl KindMetrics {
    fn new(kind: &str) -> KindMetrics {
        let counter = |outcome: &'static str| metrics::counter!(OPS_TOTAL, "kind" => kind.to_owned(), "outcome" => outcome);
        KindMetrics {
            succeeded: counter("succeeded"),
            failed: counter("failed"),
            timeout: counter("timeout"),
            cancelled: counter("cancelled"),
            duration: metrics::histogram!(OP_DURATION_SECONDS, "kind" => kind.to_owned()),
        }
    }

    fn record(&self, result: &OpResult, duration: Duration) {
        let counter = if result.ok {
            &self.succeeded
        } else {
            match result.failure_kind() {
                FailureKind::Timeout => &self.timeout,
                FailureKind::Cancelled => &self.cancelled,
                FailureKind::Error | FailureKind::Permanent | FailureKind::Unspecified => {
                    &self.failed
                }
            }
        };
        counter.increment(1);
        self.duration.record(duration);
    }
}

/// Op metrics per kind, made once for the registry's kinds.
pub(crate) struct OpMetrics {
    by_kind: HashMap<String, KindMetrics>,
}

impl OpMetrics {
    pub(crate) fn new(kinds: impl IntoIterator<Item = String>) -> OpMetrics {
        OpMetrics {
            by_kind: kinds
                .into_iter()
                .map(|kind| {
                    let metrics = KindMetrics::new(&kind);
                    (kind, metrics)
                })
                .collect(),
        }
    }

    /// One op ended with `result` after running `duration`.
    pub(crate) fn record(&self, kind: &str, result: &OpResult, duration: Duration) {
        match self.by_kind.get(kind) {
            Some(metrics) => metrics.record(result, duration),
            // A kind this worker does not register (refused at once): rare,
            // and bounded by what coordinators send.
            None => KindMetrics::new(kind).record(result, duration),
        }
    }
}

/// The slot gauges (`volley_worker_slots{state}`) of a worker with `slots`.
pub(crate) struct SlotGauges {
    slots: u32,
    busy: Gauge,
    free: Gauge,
}

impl SlotGauges {
    pub(crate) fn new(slots: u32) -> SlotGauges {
        let gauges = SlotGauges {
            slots,
            busy: metrics::gauge!(SLOTS, "state" => "busy"),
            free: metrics::gauge!(SLOTS, "state" => "free"),
        };
        gauges.set(0);
        gauges
    }

    pub(crate) fn set(&self, running: usize) {
        let busy = u32::try_from(running).unwrap_or(u32::MAX);
        self.busy.set(f64::from(busy.min(self.slots)));
        self.free.set(f64::from(self.slots.saturating_sub(busy)));
    }
}

/// Whether the worker is registered with a coordinator now.
pub(crate) fn set_connected(connected: bool) {
    metrics::gauge!(CONNECTED).set(f64::from(u8::from(connected)));
}

/// Whether the worker drains.
pub(crate) fn set_draining(draining: bool) {
    metrics::gauge!(DRAINING).set(f64::from(u8::from(draining)));
}
