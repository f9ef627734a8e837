//! A batch's trace: the context its op spans hang from, and the span of each
//! op's dispatch whose context goes to the worker with the assignment.
//!
//! The SubmitBatch span's W3C context is stored with the batch (in the
//! spec's `trace_context`), not kept in memory: any coordinator sharing the
//! store — one that did not accept the batch, or a restarted one — parents
//! the batch's op spans on it. Everything here goes through the global
//! propagator, so a process that installed none (tracing off) extracts
//! nothing and creates no span per op.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, global};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use volley_proto::BatchId;

/// A W3C carrier: `traceparent` (and `tracestate`), as the proto holds it.
pub(crate) type Carrier = HashMap<String, String>;

/// The remote context in `carrier`, if it holds a valid one.
pub(crate) fn extract(carrier: &dyn Extractor) -> Option<Context> {
    let context = global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    context.span().span_context().is_valid().then_some(context)
}

/// The carrier of `span`'s context: empty unless an OpenTelemetry layer
/// records the span (and a propagator is installed).
pub(crate) fn carrier_of(span: &tracing::Span) -> Carrier {
    let mut carrier = Carrier::new();
    inject(&span.context(), &mut carrier);
    carrier
}

fn inject(context: &Context, carrier: &mut Carrier) {
    if context.span().span_context().is_valid() {
        global::get_text_map_propagator(|propagator| propagator.inject_context(context, carrier));
    }
}

/// The context a batch's op spans are children of (its SubmitBatch span's),
/// read once when the batch is planned. Untraced batches have none, and
/// their dispatch costs nothing extra.
#[derive(Clone, Default)]
pub(crate) struct BatchTrace(Option<Context>);

impl BatchTrace {
    pub(crate) fn from_carrier(carrier: &Carrier) -> Self {
        if carrier.is_empty() {
            return BatchTrace(None);
        }
        BatchTrace(extract(carrier))
    }

    /// The assignment's `trace_context`: the context of an `op.dispatch`
    /// span, a child of the batch's span, which ends here (the worker's
    /// `op.execute` span is its child and says how the op ended). Empty
    /// for an untraced batch.
    pub(crate) fn dispatch(
        &self,
        batch: &BatchId,
        op: &str,
        kind: &str,
        attempt: u32,
        worker: &str,
    ) -> Carrier {
        let Some(parent) = &self.0 else {
            return Carrier::new();
        };
        if !parent.span().span_context().is_sampled() {
            // Sampled out where the trace began: no span would be recorded
            // here or on the worker; pass the decision on, nothing more.
            let mut carrier = Carrier::new();
            inject(parent, &mut carrier);
            return carrier;
        }
        let span = tracing::info_span!(
            "op.dispatch",
            otel.kind = "producer",
            batch = %batch,
            op,
            kind,
            attempt,
            worker,
        );
        let context = match span.set_parent(parent.clone()) {
            Ok(()) => span.context(),
            // No OpenTelemetry layer records spans here: pass the batch's
            // own context on, so the worker's span still joins the trace.
            Err(_) => parent.clone(),
        };
        let mut carrier = Carrier::new();
        inject(&context, &mut carrier);
        carrier
    }
}

impl fmt::Debug for BatchTrace {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(context) => write!(
                formatter,
                "BatchTrace({})",
                context.span().span_context().trace_id()
            ),
            None => formatter.write_str("BatchTrace(none)"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn untraced_batches_have_no_context_and_no_dispatch_carrier() {
        let trace = BatchTrace::from_carrier(&Carrier::new());
        assert!(trace.0.is_none());
        let carrier = trace.dispatch(&BatchId::new("b".to_owned()), "a", "noop", 1, "w");
        assert!(carrier.is_empty());
    }

    #[test]
    fn without_a_propagator_nothing_is_extracted() {
        // No global propagator installed in this test binary: the no-op one
        // reads nothing, which is what keeps an untraced process free.
        let mut carrier = Carrier::new();
        carrier.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        assert!(BatchTrace::from_carrier(&carrier).0.is_none());
    }
}
