//! `volley health` against real processes: a coordinator on a real Redis
//! and a worker with `--health-listen`; SERVING, NOT_SERVING once Redis is
//! gone, `--watch`, unreachable addresses, and reflection on a worker's
//! health port.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const DEADLINE: Duration = Duration::from_secs(60);

async fn volley_health(args: &[&str]) -> Output {
    common::volley()
        .arg("health")
        .args(args)
        .env_remove("VOLLEY_COORDINATOR")
        .env("VOLLEY_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley health runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Services a grpc.reflection.v1 server at `url` lists.
async fn reflected_services(url: &str) -> Vec<String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    match responses
        .message()
        .await
        .expect("a response")
        .and_then(|response| response.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("expected a list of services, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_once_redis_is_gone() {
    let mut cluster = common::Cluster::start(0).await;
    let health_address = format!("127.0.0.1:{}", common::free_port());
    cluster
        .add_bare_worker("probed", &["--health-listen", &health_address])
        .await;
    let connected = cluster
        .client
        .wait_for_workers(1, Duration::from_secs(20))
        .await
        .expect("workers");
    assert_eq!(connected, 1);
    let url = cluster.url.clone();

    let coordinator = volley_health(&["--coordinator", &url]).await;
    assert_eq!(coordinator.status.code(), Some(0), "{coordinator:?}");
    assert_eq!(
        text(&coordinator.stdout).trim(),
        format!("coordinator {url}: SERVING")
    );
    let worker = volley_health(&["--worker", &health_address]).await;
    assert_eq!(worker.status.code(), Some(0), "{worker:?}");
    assert_eq!(
        text(&worker.stdout).trim(),
        format!("worker http://{health_address}: SERVING")
    );
    // The default address comes from VOLLEY_COORDINATOR, as for every
    // client command.
    let from_env = common::volley()
        .args([
            "health",
            "--output",
            "json",
            "--service",
            "volley.v1.BatchService",
        ])
        .env("VOLLEY_COORDINATOR", &url)
        .output()
        .await
        .expect("volley health runs");
    assert_eq!(from_env.status.code(), Some(0), "{from_env:?}");
    let document: serde_json::Value =
        serde_json::from_slice(&from_env.stdout).expect("one JSON document");
    assert_eq!(document["status"], "SERVING");
    assert_eq!(document["target"], "coordinator");
    assert_eq!(document["service"], "volley.v1.BatchService");
    let unknown = volley_health(&["--coordinator", &url, "--service", "no.such.Service"]).await;
    assert_eq!(unknown.status.code(), Some(4), "{unknown:?}");
    assert!(
        text(&unknown.stdout).contains("SERVICE_UNKNOWN"),
        "{unknown:?}"
    );

    // Reflection beside health on the worker's health port.
    let services = reflected_services(&format!("http://{health_address}")).await;
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );

    // A watcher sees SERVING, then NOT_SERVING once Redis is gone.
    let mut watcher = common::volley()
        .args(["health", "--watch", "--coordinator", &url])
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("volley health --watch starts");
    let mut lines = BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a first status in time")
        .expect("read")
        .expect("a line");
    assert_eq!(first, format!("coordinator {url}: SERVING"));

    cluster.redis.kill();
    let second = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a change in time")
        .expect("read")
        .expect("a line");
    assert_eq!(second, format!("coordinator {url}: NOT_SERVING"));
    let not_serving = volley_health(&["--coordinator", &url]).await;
    assert_eq!(not_serving.status.code(), Some(4), "{not_serving:?}");
    assert_eq!(
        text(&not_serving.stdout).trim(),
        format!("coordinator {url}: NOT_SERVING")
    );
    assert!(
        text(&not_serving.stderr).contains(&format!("the coordinator at {url} is NOT_SERVING")),
        "{not_serving:?}"
    );

    // The coordinator goes away: the watcher says so and exits 3.
    cluster
        .coordinator
        .start_kill()
        .expect("kill the coordinator");
    let watched = tokio::time::timeout(DEADLINE, watcher.wait_with_output())
        .await
        .expect("the watcher exits")
        .expect("wait");
    assert_eq!(watched.status.code(), Some(3), "{watched:?}");
    assert!(
        text(&watched.stderr).contains("health stream"),
        "{watched:?}"
    );
}

#[tokio::test]
async fn health_of_an_address_nobody_serves_is_unreachable() {
    let port = common::free_port();
    let coordinator = volley_health(&[
        "--coordinator",
        &format!("http://127.0.0.1:{port}"),
        "--timeout",
        "2s",
    ])
    .await;
    assert_eq!(coordinator.status.code(), Some(3), "{coordinator:?}");
    assert!(coordinator.stdout.is_empty(), "{coordinator:?}");
    assert!(
        text(&coordinator.stderr).contains(&format!(
            "cannot reach the coordinator at http://127.0.0.1:{port}"
        )),
        "{coordinator:?}"
    );
    let worker =
        volley_health(&["--worker", &format!("127.0.0.1:{port}"), "--timeout", "2s"]).await;
    assert_eq!(worker.status.code(), Some(3), "{worker:?}");
    assert!(
        text(&worker.stderr).contains(&format!(
            "cannot reach the worker at http://127.0.0.1:{port}"
        )),
        "{worker:?}"
    );
}
