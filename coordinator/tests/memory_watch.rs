//! `WatchMemory` over gRPC: the headers a client resumes with, a reset
//! instead of a silent gap, hostile `store_epoch` values, and a shutdown
//! that says so instead of ending the stream as if all was said.

mod common;

use tonic::Code;
use volley_proto::v1::memory_service_client::MemoryServiceClient;
use volley_proto::{STORE_EPOCH_HEADER, WATCH_AFTER_HEADER, WATCH_EXISTING_HEADER, v1};

fn watch_request(after_revision: u64, store_epoch: &str) -> v1::WatchMemoryRequest {
    v1::WatchMemoryRequest {
        namespace: "watched".into(),
        after_revision,
        store_epoch: store_epoch.into(),
        ..v1::WatchMemoryRequest::default()
    }
}

async fn put(client: &mut MemoryServiceClient<tonic::transport::Channel>, key: &str) {
    client
        .put_memory(v1::PutMemoryRequest {
            namespace: "watched".into(),
            key: key.into(),
            value: b"v".to_vec(),
            ..v1::PutMemoryRequest::default()
        })
        .await
        .expect("put");
}

fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> String {
    metadata
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("header {name}"))
        .to_owned()
}

#[tokio::test]
async fn a_watch_says_its_epoch_and_start_and_resets_on_another_epoch_or_a_revision_ahead()
-> anyhow::Result<()> {
    let (url, shutdown) = common::start_coordinator().await?;
    let mut client = MemoryServiceClient::connect(url).await?;
    for key in ["a", "b", "c"] {
        put(&mut client, key).await;
    }

    let mut existing = watch_request(0, "");
    existing.include_existing = true;
    let response = client.watch_memory(existing).await?;
    let epoch = header(response.metadata(), STORE_EPOCH_HEADER);
    assert!(!epoch.is_empty());
    assert_eq!(header(response.metadata(), WATCH_AFTER_HEADER), "3");
    assert_eq!(header(response.metadata(), WATCH_EXISTING_HEADER), "3");
    let mut stream = response.into_inner();
    for key in ["a", "b", "c"] {
        let change = stream.message().await?.expect("an existing key");
        assert_eq!((change.key.as_str(), change.revision), (key, 3));
    }
    drop(stream);

    // The same epoch resumes exactly after the revision.
    let mut stream = client
        .watch_memory(watch_request(1, &epoch))
        .await?
        .into_inner();
    let change = stream.message().await?.expect("revision 2");
    assert_eq!((change.key.as_str(), change.revision), ("b", 2));
    drop(stream);

    // Another epoch, or a revision the scope never reached: a reset at the
    // scope's revision, then DATA_LOSS for clients that do not know resets.
    let longest_wrong_epoch = "x".repeat(64);
    for (after, store_epoch) in [
        (1, "another-epoch"),
        (1, longest_wrong_epoch.as_str()),
        (10, ""),
        (10, epoch.as_str()),
    ] {
        let mut stream = client
            .watch_memory(watch_request(after, store_epoch))
            .await?
            .into_inner();
        let reset = stream.message().await?.expect("a reset");
        assert_eq!(reset.kind(), v1::MemoryChangeKind::Reset, "{reset:?}");
        assert_eq!(
            reset.reset_reason(),
            v1::MemoryResetReason::StoreRestarted,
            "{reset:?}"
        );
        assert_eq!(reset.revision, 3);
        let status = stream
            .message()
            .await
            .expect_err("the stream ends in error");
        assert_eq!(status.code(), Code::DataLoss, "{status:?}");
        assert!(
            status.message().contains("read the keys again"),
            "{status:?}"
        );
    }

    // A store_epoch longer than any epoch is refused, not compared.
    let status = client
        .watch_memory(watch_request(1, &"x".repeat(65)))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = client
        .watch_memory(watch_request(1, &"x".repeat(1 << 20)))
        .await
        .expect_err("refused");
    assert_ne!(status.code(), Code::Ok);

    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_coordinator_shutting_down_ends_its_watches_unavailable() -> anyhow::Result<()> {
    let (url, shutdown) = common::start_coordinator().await?;
    let mut client = MemoryServiceClient::connect(url).await?;
    let mut stream = client
        .watch_memory(watch_request(0, ""))
        .await?
        .into_inner();
    put(&mut client, "k").await;
    let change = stream.message().await?.expect("the write");
    assert_eq!(change.revision, 1);

    shutdown.cancel();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends");
    match ended {
        Err(status) => assert!(status.code() == Code::Unavailable, "{status:?}"),
        Ok(end) => panic!("the stream must not end as if all was said: {end:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_watch_resuming_before_the_trimmed_changes_is_reset_not_skipped() -> anyhow::Result<()> {
    // A store that keeps only the last two changes of a scope.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let coordinator = volley_coordinator::Coordinator::start(
        std::sync::Arc::new(volley_store::MemoryStore::new().with_change_log_cap(2)),
        volley_coordinator::CoordinatorConfig::default(),
        shutdown.child_token(),
    )
    .await?;
    let serve_shutdown = shutdown.clone();
    tokio::spawn(async move {
        volley_coordinator::serve(listener, None, coordinator, serve_shutdown).await
    });
    let mut client = MemoryServiceClient::connect(url).await?;
    for key in ["a", "b", "c", "d", "e"] {
        put(&mut client, key).await;
    }

    let mut stream = client
        .watch_memory(watch_request(1, ""))
        .await?
        .into_inner();
    let reset = stream.message().await?.expect("a reset");
    assert_eq!(reset.kind(), v1::MemoryChangeKind::Reset, "{reset:?}");
    assert_eq!(
        reset.reset_reason(),
        v1::MemoryResetReason::ChangesTrimmed,
        "{reset:?}"
    );
    assert_eq!(reset.revision, 5);
    let status = stream.message().await.expect_err("then the error");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("read the keys again"),
        "{status:?}"
    );

    // Resuming within what is kept is exact.
    let mut stream = client
        .watch_memory(watch_request(3, ""))
        .await?
        .into_inner();
    let change = stream.message().await?.expect("revision 4");
    assert_eq!((change.key.as_str(), change.revision), ("d", 4));
    shutdown.cancel();
    Ok(())
}
