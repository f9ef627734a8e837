//! W3C trace context on outgoing requests: the current OpenTelemetry context
//! goes into the gRPC metadata through the global propagator.
//!
//! Only the `opentelemetry` API is used, so the SDK stays the application's
//! choice. Without one (no propagator installed) injecting writes nothing,
//! and the coordinator starts no trace of its own for the request's batch
//! unless it traces itself.

use opentelemetry::propagation::Injector;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Writes the propagator's fields (`traceparent`, `tracestate`) into gRPC
/// metadata. Keys or values that are not valid metadata are skipped.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Injects the current OpenTelemetry context (with a `tracing` OpenTelemetry
/// layer, the context of the current span) into `metadata`.
pub(crate) fn inject_current(metadata: &mut MetadataMap) {
    let context = opentelemetry::Context::current();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}
