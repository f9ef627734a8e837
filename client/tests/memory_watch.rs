//! `Memory::watch_with` and `Memory::wait_with` against a scripted fake
//! coordinator: a broken stream is resumed after the last revision, in the
//! same store epoch; a reset ends the watch; a change out of order is an
//! error, never yielded; a wait is made again after a broken call, for what
//! is left of its timeout; and an outage past the budget is an error.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use volley_client::{Client, ClientError, Scope, WatchOptions};
use volley_proto::v1::memory_service_server::{MemoryService, MemoryServiceServer};
use volley_proto::{STORE_EPOCH_HEADER, WATCH_AFTER_HEADER, WATCH_EXISTING_HEADER, v1};

/// One answer to a `WatchMemory` call: its headers' epoch and start, then
/// these items.
struct Answer {
    epoch: &'static str,
    after: u64,
    items: Vec<Result<v1::MemoryChange, Status>>,
}

#[derive(Default)]
struct Fake {
    watches: Mutex<VecDeque<Answer>>,
    waits: Mutex<VecDeque<Result<v1::GetMemoryResponse, Status>>>,
    watch_requests: Mutex<Vec<v1::WatchMemoryRequest>>,
    wait_requests: Mutex<Vec<v1::WaitMemoryRequest>>,
}

fn put(revision: u64) -> Result<v1::MemoryChange, Status> {
    Ok(v1::MemoryChange {
        revision,
        key: format!("k{revision}"),
        kind: v1::MemoryChangeKind::Put as i32,
        version: 1,
        ..v1::MemoryChange::default()
    })
}

type Changes = Pin<Box<dyn Stream<Item = Result<v1::MemoryChange, Status>> + Send>>;

#[tonic::async_trait]
impl MemoryService for Fake {
    async fn get_memory(
        &self,
        _: Request<v1::GetMemoryRequest>,
    ) -> Result<Response<v1::GetMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn put_memory(
        &self,
        _: Request<v1::PutMemoryRequest>,
    ) -> Result<Response<v1::PutMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_memory(
        &self,
        _: Request<v1::DeleteMemoryRequest>,
    ) -> Result<Response<v1::DeleteMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_memory(
        &self,
        _: Request<v1::ListMemoryRequest>,
    ) -> Result<Response<v1::ListMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn incr_memory(
        &self,
        _: Request<v1::IncrMemoryRequest>,
    ) -> Result<Response<v1::IncrMemoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchMemoryStream = Changes;

    async fn watch_memory(
        &self,
        request: Request<v1::WatchMemoryRequest>,
    ) -> Result<Response<Changes>, Status> {
        self.watch_requests
            .lock()
            .expect("requests")
            .push(request.into_inner());
        let Some(answer) = self.watches.lock().expect("script").pop_front() else {
            return Err(Status::unavailable("the fake has nothing more to say"));
        };
        let stream: Changes = Box::pin(futures::stream::iter(answer.items));
        let mut response = Response::new(stream);
        let metadata = response.metadata_mut();
        metadata.insert(STORE_EPOCH_HEADER, MetadataValue::from_static(answer.epoch));
        metadata.insert(WATCH_AFTER_HEADER, MetadataValue::from(answer.after));
        metadata.insert(WATCH_EXISTING_HEADER, MetadataValue::from(0_u64));
        Ok(response)
    }

    async fn wait_memory(
        &self,
        request: Request<v1::WaitMemoryRequest>,
    ) -> Result<Response<v1::GetMemoryResponse>, Status> {
        self.wait_requests
            .lock()
            .expect("requests")
            .push(request.into_inner());
        let answer = self.waits.lock().expect("script").pop_front();
        answer
            .unwrap_or_else(|| Err(Status::unavailable("nothing more")))
            .map(Response::new)
    }
}

async fn serve(fake: Arc<Fake>) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MemoryServiceServer::from_arc(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("url")
        .connect_lazy();
    Client::from_channel(url, channel)
}

fn fast(budget: Duration) -> WatchOptions {
    WatchOptions {
        reconnect_budget: budget,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn a_broken_memory_watch_resumes_after_its_last_revision_in_its_epoch_until_a_reset() {
    let fake = Arc::new(Fake::default());
    fake.watches.lock().expect("script").extend([
        // From now on (revision 5): two changes, then the coordinator goes.
        Answer {
            epoch: "epoch-1",
            after: 5,
            items: vec![put(6), put(7), Err(Status::unavailable("shutting down"))],
        },
        // Refused once while failing over.
        Answer {
            epoch: "epoch-1",
            after: 7,
            items: vec![Err(Status::unavailable("draining"))],
        },
        // Ends without a word: a coordinator that went away.
        Answer {
            epoch: "epoch-1",
            after: 7,
            items: vec![put(8)],
        },
        Answer {
            epoch: "epoch-2",
            after: 8,
            items: vec![
                Ok(v1::MemoryChange {
                    revision: 2,
                    kind: v1::MemoryChangeKind::Reset as i32,
                    reset_reason: v1::MemoryResetReason::StoreRestarted as i32,
                    ..v1::MemoryChange::default()
                }),
                Err(Status::data_loss("reset")),
            ],
        },
    ]);
    let client = serve(Arc::clone(&fake)).await;
    let memory = client.memory(Scope::Namespace("ns".into()));
    let changes = memory
        .watch_with("", 0, false, fast(Duration::from_secs(10)))
        .await
        .expect("watch opens");
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(30), changes.collect())
        .await
        .expect("the watch ends at its reset");
    let seen: Vec<(u64, v1::MemoryChangeKind)> = items
        .into_iter()
        .map(|item| {
            let change = item.expect("no error before the reset");
            (change.revision, change.kind())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (6, v1::MemoryChangeKind::Put),
            (7, v1::MemoryChangeKind::Put),
            (8, v1::MemoryChangeKind::Put),
            (2, v1::MemoryChangeKind::Reset),
        ]
    );
    let requests = fake.watch_requests.lock().expect("requests").clone();
    let resumed: Vec<(u64, &str)> = requests
        .iter()
        .map(|request| (request.after_revision, request.store_epoch.as_str()))
        .collect();
    assert_eq!(
        resumed,
        [(0, ""), (7, "epoch-1"), (7, "epoch-1"), (8, "epoch-1")]
    );
}

#[tokio::test]
async fn a_memory_change_out_of_order_is_an_error_never_yielded() {
    let fake = Arc::new(Fake::default());
    fake.watches.lock().expect("script").push_back(Answer {
        epoch: "e",
        after: 0,
        items: vec![put(1), put(2), put(2)],
    });
    let client = serve(fake).await;
    let changes = client
        .memory(Scope::Namespace("ns".into()))
        .watch_with("", 0, false, fast(Duration::from_secs(10)))
        .await
        .expect("watch opens");
    let items: Vec<_> = tokio::time::timeout(Duration::from_secs(30), changes.collect())
        .await
        .expect("the watch ends");
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[1].is_ok());
    assert!(
        matches!(&items[2], Err(ClientError::Other { message, .. }) if message.contains("revision 2 after revision 2")),
        "{:?}",
        items[2]
    );
}

#[tokio::test]
async fn a_memory_watch_gives_up_once_the_outage_outlasts_the_budget() {
    let fake = Arc::new(Fake::default());
    let client = serve(fake).await;
    let error = match client
        .memory(Scope::Namespace("ns".into()))
        .watch_with("", 3, false, fast(Duration::from_millis(200)))
        .await
    {
        Ok(_) => panic!("no coordinator answers: the watch must not open"),
        Err(error) => error,
    };
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn a_broken_memory_wait_is_made_again_for_what_is_left_of_its_timeout() {
    let fake = Arc::new(Fake::default());
    fake.waits.lock().expect("script").extend([
        Err(Status::unavailable("shutting down")),
        Ok(v1::GetMemoryResponse {
            found: true,
            value: b"here".to_vec(),
            version: 1,
            ..v1::GetMemoryResponse::default()
        }),
    ]);
    let client = serve(Arc::clone(&fake)).await;
    let entry = client
        .memory(Scope::Namespace("ns".into()))
        .wait_with(
            "k",
            Some(Duration::from_secs(30)),
            fast(Duration::from_secs(10)),
        )
        .await
        .expect("the second call answers");
    assert_eq!(entry.value, b"here");
    let timeouts: Vec<u64> = fake
        .wait_requests
        .lock()
        .expect("requests")
        .iter()
        .map(|request| request.timeout_ms)
        .collect();
    assert_eq!(timeouts.len(), 2);
    assert!(timeouts[0] <= 30_000 && timeouts[1] <= timeouts[0] && timeouts[1] > 0);

    // Nobody answers any more: the budget runs out, and the error says
    // the cluster cannot be reached (retryable), not that the key is absent.
    let error = client
        .memory(Scope::Namespace("ns".into()))
        .wait_with("k", None, fast(Duration::from_millis(200)))
        .await
        .expect_err("gives up");
    assert!(error.is_retryable(), "{error:?}");
}
