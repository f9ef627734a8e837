//! An op's span joins its batch's trace: the W3C context the coordinator
//! sent with the assignment is its parent.

use std::collections::HashMap;

use opentelemetry::global;
use opentelemetry::trace::{Status, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes the coordinator's dispatch span (in `carrier`) the parent of
/// `span`, which must not have been entered yet. Without an OpenTelemetry
/// layer the `traceparent` is at least logged with the span.
pub(crate) fn join_trace(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    let joined = parent.span().span_context().is_valid() && span.set_parent(parent).is_ok();
    if !joined && let Some(traceparent) = carrier.get("traceparent") {
        span.record("traceparent", traceparent.as_str());
    }
}

/// Marks `span` failed (OpenTelemetry status ERROR with the message).
pub(crate) fn mark_failed(span: &tracing::Span, message: &str) {
    span.set_status(Status::error(message.to_owned()));
}
