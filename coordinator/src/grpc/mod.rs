//! Thin tonic adapters: each converts proto ⇄ domain and calls
//! [`Coordinator`]. No logic lives here; the `auth` layer authenticates
//! every call but health's before any adapter sees it.

mod auth;
mod batch;
mod count;
mod memory;
mod plan;
pub mod reflection;
mod status;
mod tokens;
mod trace;
mod worker;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use volley_proto::MAX_MESSAGE_BYTES;
use volley_proto::v1::batch_service_server::BatchServiceServer;
use volley_proto::v1::memory_service_server::MemoryServiceServer;
use volley_proto::v1::plan_service_server::PlanServiceServer;
use volley_proto::v1::token_service_server::TokenServiceServer;
use volley_proto::v1::worker_service_server::WorkerServiceServer;
use volley_tls::ServerTls;

use crate::service::Coordinator;

/// Serves the coordinator's gRPC API (batches, memory, workers, tokens,
/// health, reflection) on `listener` until `shutdown` fires, over TLS when
/// `tls` is given. Taking the listener lets tests bind port 0.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    coordinator: Coordinator,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // TCP_NODELAY on every accepted socket (volley-tls sets it): without
    // it, small messages (watch events, assignments) wait out Nagle and the
    // peer's delayed ack, ~40 ms.
    serve_incoming(
        volley_tls::server_incoming(listener, tls),
        coordinator,
        shutdown,
    )
    .await
}

/// [`serve`] on a Unix socket: what `volley run` serves its embedded
/// coordinator on, in a directory only its user can enter, so no other
/// process of the machine reaches it.
#[cfg(unix)]
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    coordinator: Coordinator,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    serve_incoming(
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        coordinator,
        shutdown,
    )
    .await
}

async fn serve_incoming<I, IO, IE>(
    incoming: I,
    coordinator: Coordinator,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<BatchServiceServer<batch::BatchAdapter>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // NOT_SERVING while the store is unreachable: a probe (or a balancer)
    // sends clients elsewhere, though workers and watches ride it out.
    let mut serving = coordinator.serving();
    let reporter = health_reporter.clone();
    let health_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = health_shutdown.cancelled() => return,
                changed = serving.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let status = if *serving.borrow_and_update() {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(
                    <BatchServiceServer<batch::BatchAdapter> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
        }
    });
    let batches = BatchServiceServer::new(batch::BatchAdapter::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let memory = MemoryServiceServer::new(memory::MemoryAdapter::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let workers = WorkerServiceServer::new(worker::WorkerAdapter::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let tokens = TokenServiceServer::new(tokens::TokenAdapter::new(coordinator.clone()));
    let plans = PlanServiceServer::new(plan::PlanAdapter::new(coordinator.clone()))
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (reflection_v1, reflection_v1alpha) =
        reflection::reflection_services(reflection::COORDINATOR_DESCRIPTOR_SETS)
            .expect("the descriptor sets compiled into this binary decode (a unit test checks)");
    let shutdown_signal = shutdown.clone();
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(count::layer))
        .layer(tower::layer::layer_fn(auth::layer(coordinator.clone())))
        .add_service(health_service)
        .add_service(batches)
        .add_service(memory)
        .add_service(workers)
        .add_service(tokens)
        .add_service(plans)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_signal.cancelled().await;
        })
        .await
}
