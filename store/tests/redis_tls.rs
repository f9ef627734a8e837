//! The Redis store over TLS with a password: it connects with the server's
//! CA and the password (from the URL or from a file) and does real work,
//! doorbells included; a wrong password, an untrusted certificate or a
//! missing client certificate fail with errors that say so and never hold
//! the password.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use volley_proto::BatchId;
use volley_store::{
    BatchState, Claimed, Completion, Doorbell, FailureKind, MemoryScope, NewBatch, NewOp,
    OnFailure, RedisConnect, RedisConnectError, RedisStore, Store,
};
use volley_testkit::{RedisOptions, RedisServer};

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "tls0pass0word0x9";
const NOW: u64 = 1_700_000_000_000;
const LEASE_UNTIL: u64 = NOW + 3_600_000;

fn tls_server() -> RedisServer {
    RedisServer::start_with(RedisOptions::tls_with_password(PASSWORD))
        .expect("start a TLS redis-server with a password")
}

/// The server's URL and CA, nothing else.
fn with_ca(server: &RedisServer, url: String) -> RedisConnect {
    RedisConnect {
        tls_ca: Some(server.ca_cert_path().expect("TLS").to_owned()),
        ..RedisConnect::from_url(url)
    }
}

async fn connect(options: &RedisConnect) -> Result<RedisStore, RedisConnectError> {
    tokio::time::timeout(
        DEADLINE,
        RedisStore::connect_with_options(options, CancellationToken::new()),
    )
    .await
    .expect("connect returns before the deadline")
}

async fn connect_error(options: &RedisConnect) -> RedisConnectError {
    match connect(options).await {
        Ok(_) => panic!("{options:?} connected"),
        Err(error) => error,
    }
}

fn password_file(content: &str) -> (PathBuf, TempFile) {
    let path = std::env::temp_dir().join(format!(
        "volley-redis-tls-test-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::write(&path, content).expect("write the password file");
    (path.clone(), TempFile(path))
}

/// Removes the file on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Creates a one-op batch, claims the op and completes it: the doorbell
/// (pub/sub, its own connection) and the command connection both work.
async fn do_real_work(store: &RedisStore) {
    let batch_id = BatchId::new(format!("tls-{}", uuid::Uuid::now_v7()));
    let mut doorbells = store.doorbells();
    store
        .create_batch(NewBatch {
            id: batch_id.clone(),
            name: "over tls".to_owned(),
            memory: MemoryScope::Batch(batch_id.clone()),
            max_parallel: 0,
            on_failure: OnFailure::Continue,
            created_ms: NOW,
            deadline_ms: 0,
            spec: b"spec".to_vec(),
            ops: vec![NewOp {
                priority: 2,
                max_attempts: 1,
                ..NewOp::default()
            }],
            retry_failed_sequential: false,
            retain_ms: 0,
            tenant: String::new(),
            submitted_by: String::new(),
            request_digest: String::new(),
            lost_worker_retries: 0,
        })
        .await
        .expect("create a batch");
    // The creation's bell arrives through the pub/sub connection.
    tokio::time::timeout(DEADLINE, async {
        while doorbells.recv().await.expect("doorbell channel open")
            != Doorbell::Started(batch_id.clone())
        {}
    })
    .await
    .expect("the batch's Started doorbell over the TLS pub/sub connection");
    let claimed = store
        .claim(&batch_id, 10, NOW + 1, LEASE_UNTIL)
        .await
        .expect("claim");
    assert_eq!(
        claimed,
        vec![Claimed {
            index: 0,
            attempt: 1
        }]
    );
    let outcome = store
        .complete(
            &batch_id,
            &[Completion {
                index: 0,
                attempt: 1,
                ok: true,
                failure: FailureKind::Error,
                retry_after_ms: 0,
                output: "done".to_owned(),
                error: String::new(),
                details_json: String::new(),
                worker: "w1".to_owned(),
                started_ms: NOW + 2,
                duration_ms: 1,
                store_as: None,
            }],
            NOW + 3,
        )
        .await
        .expect("complete");
    assert_eq!(outcome.recorded, 1);
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    let meta = store
        .meta(&batch_id)
        .await
        .expect("meta")
        .expect("the batch");
    assert_eq!(meta.state, BatchState::Succeeded);
    assert_eq!(meta.succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connects_over_tls_with_the_ca_and_the_password_in_the_url() {
    let server = tls_server();
    let store = connect(&with_ca(&server, server.url()))
        .await
        .expect("connect with the CA and the URL's password");
    do_real_work(&store).await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connects_over_tls_with_the_password_from_a_file() {
    let server = tls_server();
    let (path, _file) = password_file(&format!("{PASSWORD}\n"));
    let options = RedisConnect {
        password_file: Some(path),
        ..with_ca(&server, server.url_without_password())
    };
    let store = connect(&options)
        .await
        .expect("connect with a password file");
    do_real_work(&store).await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_file_wins_over_the_urls_password() {
    let server = tls_server();
    let (path, _file) = password_file(PASSWORD);
    let options = RedisConnect {
        password_file: Some(path),
        ..with_ca(
            &server,
            format!("rediss://:not-the-password@127.0.0.1:{}", server.port()),
        )
    };
    let store = connect(&options)
        .await
        .expect("the file's password is used");
    do_real_work(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_an_error_that_does_not_hold_it() {
    let server = tls_server();
    let wrong = "wr0ng0secret0pw";
    let url = format!("rediss://:{wrong}@127.0.0.1:{}", server.port());
    let error = connect_error(&with_ca(&server, url)).await;
    let message = error.to_string();
    assert!(
        matches!(error, RedisConnectError::Authentication { .. }),
        "{message}"
    );
    assert!(!error.is_retryable());
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(message.contains("rediss://:***@127.0.0.1"), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert!(!format!("{error:?}").contains(wrong), "{error:?}");

    // The same through a password file.
    let (path, _file) = password_file(&format!("{wrong}\n"));
    let options = RedisConnect {
        password_file: Some(path),
        ..with_ca(&server, server.url_without_password())
    };
    let error = connect_error(&options).await;
    assert!(matches!(error, RedisConnectError::Authentication { .. }));
    assert!(!error.to_string().contains(wrong), "{error}");
    assert!(!format!("{error:?}").contains(wrong), "{error:?}");

    // And no password at all.
    let error = connect_error(&with_ca(&server, server.url_without_password())).await;
    assert!(
        matches!(error, RedisConnectError::Authentication { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_untrusted_ca_fails_the_connection() {
    let server = tls_server();
    // Without --redis-tls-ca: the system's roots do not know the test CA.
    let error = connect_error(&RedisConnect::from_url(server.url())).await;
    let message = error.to_string();
    assert!(
        matches!(error, RedisConnectError::Setup { tls: true, .. }),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
    assert!(!error.is_retryable());
    assert!(!message.contains(PASSWORD), "{message}");

    // With another server's CA.
    let other = tls_server();
    let options = RedisConnect {
        tls_ca: Some(other.ca_cert_path().expect("TLS").to_owned()),
        ..RedisConnect::from_url(server.url())
    };
    let error = connect_error(&options).await;
    let message = error.to_string();
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("--redis-tls-ca"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate_takes_ours_and_refuses_none() {
    let server = RedisServer::start_with(RedisOptions {
        require_client_cert: true,
        ..RedisOptions::tls_with_password(PASSWORD)
    })
    .expect("start a redis-server that requires client certificates");
    let options = RedisConnect {
        tls_cert: Some(server.client_cert_path().expect("TLS").to_owned()),
        tls_key: Some(server.client_key_path().expect("TLS").to_owned()),
        ..with_ca(&server, server.url())
    };
    let store = connect(&options)
        .await
        .expect("connect with a client certificate");
    do_real_work(&store).await;
    store.shutdown().await;

    let error = connect_error(&with_ca(&server, server.url())).await;
    let message = error.to_string();
    assert!(
        matches!(error, RedisConnectError::Setup { .. }),
        "{message}"
    );
    assert!(message.contains("--redis-tls-cert"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_with_a_plain_redis_url_are_refused_before_connecting() {
    let options = RedisConnect {
        tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..RedisConnect::from_url(format!("redis://:{PASSWORD}@127.0.0.1:1"))
    };
    let error = connect_error(&options).await;
    assert!(
        matches!(error, RedisConnectError::TlsFileWithoutTls { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(PASSWORD), "{error}");
}
