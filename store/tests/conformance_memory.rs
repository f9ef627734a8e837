//! The conformance suite against the in-memory store.

use std::sync::Arc;

use volley_store::conformance::SMALL_CHANGE_LOG_CAP;
use volley_store::{MemoryStore, Store};

async fn make_store() -> (Arc<dyn Store>, ()) {
    (Arc::new(MemoryStore::new()), ())
}

async fn make_small_change_log_store() -> (Arc<dyn Store>, ()) {
    let store = MemoryStore::new().with_change_log_cap(SMALL_CHANGE_LOG_CAP);
    (Arc::new(store), ())
}

volley_store::conformance_tests!(make_store(), make_small_change_log_store());
