//! W3C trace context from gRPC request metadata.

use opentelemetry::Context;
use opentelemetry::propagation::Extractor;
use tonic::metadata::{KeyRef, MetadataMap};

use crate::tracing_ctx;

/// Reads the propagator's fields (`traceparent`, `tracestate`) from gRPC
/// metadata.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The caller's trace context, if its request carries a valid one.
pub(crate) fn remote_parent(metadata: &MetadataMap) -> Option<Context> {
    if !metadata.contains_key("traceparent") {
        return None;
    }
    tracing_ctx::extract(&MetadataExtractor(metadata))
}
