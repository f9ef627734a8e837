//! Conformance cases of doorbells: which bells ring for completions,
//! batches starting and ending, and memory writes.

use super::*;

/// Waits for `Doorbell::Batch(expected)`, skipping `Resync`; any other bell
/// fails the case. The deadline only guards against hanging.
async fn expect_bell(
    receiver: &mut tokio::sync::broadcast::Receiver<Doorbell>,
    expected: &BatchId,
) {
    expect_exact_bell(receiver, &Doorbell::Batch(expected.clone())).await;
}

pub async fn case_doorbell_rings_on_complete(store: &dyn Store) {
    let batch_id = id("bell");
    let marker = id("bell-marker");
    let mut receiver = store.doorbells();
    store
        .create_batch(batch("bell", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bell(&mut receiver, &batch_id).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(batch_id.clone())).await;
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    expect_exact_bell(&mut receiver, &Doorbell::Events(batch_id.clone())).await;
    // Bells arrive in order, so once the marker's bell is in, nothing of
    // the first batch is still under way.
    store
        .create_batch(batch("bell-marker", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bell(&mut receiver, &marker).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(marker.clone())).await;
    store
        .complete(&batch_id, &[success(running[0])], NOW + 20)
        .await
        .expect("complete");
    expect_bell(&mut receiver, &batch_id).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(batch_id.clone())).await;
    // A memory write nobody waits for rings only the memory bell.
    put(store, &own(&marker), "k", b"v").await;
    expect_exact_bell(&mut receiver, &Doorbell::Memory(own(&marker))).await;
}

pub async fn case_batch_scope_write_rings_both_bells(store: &dyn Store) {
    let batch_id = id("both-bells");
    store
        .create_batch(batch("both-bells", vec![waiting_for(&["k"])]))
        .await
        .expect("create");
    let mut receiver = store.doorbells();
    let outcome = store
        .memory_put(&own(&batch_id), "k", b"v", &typed("text/plain"), NOW)
        .await
        .expect("put");
    assert_eq!(outcome.unblocked, 1);
    expect_bells(
        &mut receiver,
        &[
            Doorbell::Batch(batch_id.clone()),
            Doorbell::Memory(own(&batch_id)),
        ],
    )
    .await;
    // The write is in the batch's change log.
    let changes = store
        .memory_changes(&own(&batch_id), "", 0, 10)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key, "k");
}

pub async fn case_doorbell_rings_started_and_ended(store: &dyn Store) {
    let mut receiver = store.doorbells();
    // Finished by complete.
    let done = id("se-done");
    store
        .create_batch(batch("se-done", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(done.clone())).await;
    run_one(store, &done, 0).await;
    // The claim rings the events bell only: it makes nothing claimable.
    expect_exact_bell(&mut receiver, &Doorbell::Events(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Batch(done.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(done.clone())).await;
    // Cancelled; cancelling again rings nothing.
    let cancelled = id("se-cancelled");
    store
        .create_batch(batch("se-cancelled", vec![op(0, &[1]), op(1, &[])]))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(cancelled.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(cancelled.clone())).await;
    store
        .cancel(&cancelled, "user", NOW + 5)
        .await
        .expect("cancel");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(cancelled.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(cancelled.clone())).await;
    store
        .cancel(&cancelled, "user", NOW + 6)
        .await
        .expect("cancel");
    // Failed by its deadline.
    let late = id("se-late");
    let mut new_batch = batch("se-late", vec![op(0, &[])]);
    new_batch.deadline_ms = NOW + 100;
    store.create_batch(new_batch).await.expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(late.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Started(late.clone())).await;
    let fence = hold(store, &late, NOW).await;
    let outcome = store
        .expire_deadline(&late, NOW + 100, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    expect_exact_bell(&mut receiver, &Doorbell::Batch(late.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(late.clone())).await;
    // An empty batch is never active: no Started, no Ended.
    let empty = id("se-empty");
    store
        .create_batch(batch("se-empty", Vec::new()))
        .await
        .expect("create");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(empty.clone())).await;
    // Marked lost: it ended.
    let lost = id("se-lost");
    store
        .mark_lost(std::slice::from_ref(&lost), "gone", NOW + 7)
        .await
        .expect("mark_lost");
    expect_exact_bell(&mut receiver, &Doorbell::Batch(lost.clone())).await;
    expect_exact_bell(&mut receiver, &Doorbell::Ended(lost.clone())).await;
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
}
