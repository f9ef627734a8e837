//! gRPC server reflection on the coordinator's port: a reflection client
//! (v1 and v1alpha) lists Volley's services and health, and resolves
//! `volley.v1.BatchService` to its file and methods.

mod common;

use common::start_coordinator;
use prost::Message;
use tonic_reflection::pb::{v1, v1alpha};

async fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?)
}

async fn ask_v1(
    url: &str,
    request: v1::server_reflection_request::MessageRequest,
) -> anyhow::Result<v1::server_reflection_response::MessageResponse> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(url).await?);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection response"))?;
    response
        .message_response
        .ok_or_else(|| anyhow::anyhow!("an empty reflection response"))
}

#[tokio::test]
async fn reflection_v1_lists_volley_and_health_services() -> anyhow::Result<()> {
    let (url, shutdown) = start_coordinator().await?;
    let response = ask_v1(
        &url,
        v1::server_reflection_request::MessageRequest::ListServices(String::new()),
    )
    .await?;
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(list) = response
    else {
        anyhow::bail!("expected a list of services, got {response:?}");
    };
    let names: Vec<&str> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    for expected in [
        "volley.v1.BatchService",
        "volley.v1.MemoryService",
        "volley.v1.WorkerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn reflection_v1_resolves_the_batch_service_to_its_methods() -> anyhow::Result<()> {
    let (url, shutdown) = start_coordinator().await?;
    let response = ask_v1(
        &url,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "volley.v1.BatchService".to_owned(),
        ),
    )
    .await?;
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = response
    else {
        anyhow::bail!("expected file descriptors, got {response:?}");
    };
    let files = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()?;
    let volley_file = files
        .iter()
        .find(|file| file.package() == "volley.v1")
        .ok_or_else(|| anyhow::anyhow!("no volley.v1 file among {} files", files.len()))?;
    assert_eq!(volley_file.name(), "volley/v1/volley.proto");
    let batch_service = volley_file
        .service
        .iter()
        .find(|service| service.name() == "BatchService")
        .ok_or_else(|| anyhow::anyhow!("BatchService not in volley/v1/volley.proto"))?;
    let methods: Vec<&str> = batch_service
        .method
        .iter()
        .map(|method| method.name())
        .collect();
    for expected in ["SubmitBatch", "WatchBatch", "GetBatch", "CancelBatch"] {
        assert!(methods.contains(&expected), "{expected} in {methods:?}");
    }
    // The health service resolves too (its descriptors are registered).
    let health = ask_v1(
        &url,
        v1::server_reflection_request::MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health".to_owned(),
        ),
    )
    .await?;
    assert!(
        matches!(
            health,
            v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_)
        ),
        "{health:?}"
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn reflection_v1alpha_answers_older_clients() -> anyhow::Result<()> {
    let (url, shutdown) = start_coordinator().await?;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&url).await?);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .and_then(|response| response.message_response);
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response
    else {
        anyhow::bail!("expected a list of services, got {response:?}");
    };
    let names: Vec<&str> = list
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    assert!(names.contains(&"volley.v1.BatchService"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{names:?}"
    );
    shutdown.cancel();
    Ok(())
}
