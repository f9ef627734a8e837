//! Shared by the coordinator's integration tests: a coordinator on an
//! in-memory store, served on a free port.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use volley_coordinator::{Coordinator, CoordinatorConfig};
use volley_store::MemoryStore;

/// A coordinator on an in-memory store, served on a free port until the
/// returned token is cancelled; its `http://` url.
pub async fn start_coordinator() -> anyhow::Result<(String, CancellationToken)> {
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let coordinator = Coordinator::start(
        Arc::new(MemoryStore::new()),
        CoordinatorConfig::default(),
        shutdown.child_token(),
    )
    .await?;
    let serve_shutdown = shutdown.clone();
    tokio::spawn(async move {
        volley_coordinator::serve(listener, None, coordinator, serve_shutdown).await
    });
    Ok((url, shutdown))
}
