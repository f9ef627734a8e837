//! TLS and mTLS on real processes: a coordinator serving TLS with
//! certificates made in the test, clients and a worker over `https://`,
//! `https://` failing loudly against plaintext and `http://` against TLS,
//! and client certificates required with `--tls-client-ca`.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{batch_file, free_port, volley};
use tokio::process::Child;
use volley_testkit::RedisServer;
use volley_tls::testing::TestCerts;

const DEADLINE: Duration = Duration::from_secs(60);

struct TlsCoordinator {
    _redis: RedisServer,
    _coordinator: Child,
    https: String,
    http: String,
    certs: TestCerts,
    dir: tempfile::TempDir,
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

async fn start(mtls: bool) -> TlsCoordinator {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(dir.path()).expect("certificates");
    let redis = RedisServer::start().expect("redis-server starts");
    let port = free_port();
    let mut command = volley();
    command
        .args(["coordinator", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--tls-cert", path(&certs.server_cert)])
        .args(["--tls-key", path(&certs.server_key)])
        .env("VOLLEY_REDIS", redis.url())
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if mtls {
        command.args(["--tls-client-ca", path(&certs.ca_cert)]);
    }
    let coordinator = command.spawn().expect("coordinator starts");
    let started = TlsCoordinator {
        _redis: redis,
        _coordinator: coordinator,
        https: format!("https://127.0.0.1:{port}"),
        http: format!("http://127.0.0.1:{port}"),
        certs,
        dir,
    };
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut health = volley();
        health
            .args(["health", "--coordinator", &started.https])
            .args(["--tls-ca", path(&started.certs.ca_cert)]);
        if mtls {
            health
                .args(["--tls-cert", path(&started.certs.client_cert)])
                .args(["--tls-key", path(&started.certs.client_key)]);
        }
        if health.output().await.expect("volley runs").status.success() {
            return started;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the TLS coordinator never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(args: &[&str]) -> Output {
    volley()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn clients_and_workers_speak_tls_and_https_never_falls_back_to_plaintext() {
    let cluster = start(false).await;
    let ca = path(&cluster.certs.ca_cert);
    let listed = run(&["list", "--coordinator", &cluster.https, "--tls-ca", ca]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    // Without the CA the server is not trusted; over http:// the TLS
    // server is not spoken to in plaintext. Both say so and exit 3.
    let untrusted = run(&["list", "--coordinator", &cluster.https]).await;
    assert_eq!(untrusted.status.code(), Some(3), "{}", stderr(&untrusted));
    let plaintext = run(&["list", "--coordinator", &cluster.http]).await;
    assert_eq!(plaintext.status.code(), Some(3), "{}", stderr(&plaintext));
    // TLS files with an http:// URL are a mistake, said plainly.
    let mixed = run(&["list", "--coordinator", &cluster.http, "--tls-ca", ca]).await;
    assert_ne!(mixed.status.code(), Some(0));
    assert!(stderr(&mixed).contains("https://"), "{}", stderr(&mixed));

    // A worker over https runs a batch submitted over https.
    let root = cluster.dir.path().to_string_lossy().into_owned();
    let _worker = volley()
        .args(["worker", "--coordinator", &cluster.https, "--tls-ca", ca])
        .args(["--id", "tls-worker", "--slots", "2", "--root", &root])
        .env("VOLLEY_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts");
    let file = batch_file(
        cluster.dir.path(),
        "hello.yaml",
        "name: over-tls\nops:\n  - {id: hi, kind: echo, args: {text: secure}}\n",
    );
    let submitted = run(&[
        "submit",
        path(&file),
        "--watch",
        "--output",
        "json",
        "--coordinator",
        &cluster.https,
        "--tls-ca",
        ca,
    ])
    .await;
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    let report: serde_json::Value = serde_json::from_slice(&submitted.stdout).expect("json");
    assert_eq!(report["state"], "succeeded");
    assert_eq!(report["ops"][0]["worker"], "tls-worker");
}

#[tokio::test]
async fn https_against_a_plaintext_coordinator_fails_loudly() {
    let cluster = common::Cluster::start(0).await;
    let https = cluster.url.replace("http://", "https://");
    let output = run(&["list", "--coordinator", &https]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!stderr(&output).is_empty());
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_ca() {
    let cluster = start(true).await;
    let ca = path(&cluster.certs.ca_cert);
    let anonymous = run(&["list", "--coordinator", &cluster.https, "--tls-ca", ca]).await;
    assert_eq!(anonymous.status.code(), Some(3), "{}", stderr(&anonymous));
    let identified = run(&[
        "list",
        "--coordinator",
        &cluster.https,
        "--tls-ca",
        ca,
        "--tls-cert",
        path(&cluster.certs.client_cert),
        "--tls-key",
        path(&cluster.certs.client_key),
    ])
    .await;
    assert_eq!(identified.status.code(), Some(0), "{}", stderr(&identified));
}
