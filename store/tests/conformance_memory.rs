//! The conformance suite against the in-memory store.

use std::sync::Arc;

use volley_store::{MemoryStore, Store};

async fn make_store() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

volley_store::conformance_tests!(make_store());
