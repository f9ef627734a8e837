//! An op's span joins its batch's trace (the W3C context the coordinator sent with the assignment is its parent), and the programs it starts get the same context.

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

/// The current span's W3C context as environment variables for a program
/// an op starts (`TRACEPARENT`, `TRACESTATE`: the names OpenTelemetry's
/// environment-carrier convention uses), so a traced program's spans join
/// the op's. Empty when nothing is traced (no propagator installed).
pub fn child_env() -> Vec<(String, String)> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier
        .into_iter()
        .map(|(name, value)| (name.to_ascii_uppercase(), value))
        .collect()
}

/// Marks `span` failed (OpenTelemetry status ERROR with the message).
pub(crate) fn mark_failed(span: &tracing::Span, message: &str) {
    span.set_status(Status::error(message.to_owned()));
}
