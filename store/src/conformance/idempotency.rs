//! Conformance cases of idempotent submissions and spawns.

use super::*;

/// An idempotent submission: `digest` set, as the coordinator does.
fn idempotent_batch(batch_id: &str, tenant: &str, digest: &str, ops: Vec<NewOp>) -> NewBatch {
    NewBatch {
        tenant: tenant.to_owned(),
        request_digest: digest.to_owned(),
        ..batch(batch_id, ops)
    }
}

pub async fn case_idempotent_create_returns_the_existing_batch(store: &dyn Store) {
    let batch_id = id("idem");
    let first = idempotent_batch("idem", "acme", "d1", vec![op(0, &[]), op(0, &[])]);
    assert_eq!(
        store.create_batch(first.clone()).await.expect("create"),
        Created::New
    );
    // The same submission again: nothing written, not even an event.
    let again = store.create_batch(first.clone()).await.expect("again");
    assert_eq!(again, Created::Existing);
    assert_eq!(meta(store, &batch_id).await.total, 2);
    assert_eq!(all_events(store, &batch_id).await.len(), 1);
    assert_eq!(indices(store, &batch_id, 10).await, vec![0, 1]);
    // Another body under the same key, or another tenant: refused.
    let other_body = idempotent_batch("idem", "acme", "d2", vec![op(0, &[])]);
    assert!(matches!(
        store.create_batch(other_body).await,
        Err(StoreError::IdempotencyConflict(ref batch)) if *batch == batch_id
    ));
    let other_tenant = idempotent_batch("idem", "globex", "d1", vec![op(0, &[]), op(0, &[])]);
    assert!(matches!(
        store.create_batch(other_tenant).await,
        Err(StoreError::IdempotencyConflict(_))
    ));
    // A submission without a key never reuses an id.
    assert!(matches!(
        store.create_batch(batch("idem", vec![op(0, &[])])).await,
        Err(StoreError::BatchExists(_))
    ));
    // Ended, the batch still answers its key while it is retained.
    for claimed in [0, 1] {
        store
            .complete(
                &batch_id,
                &[success(Claimed {
                    index: claimed,
                    attempt: 1,
                })],
                NOW + 5,
            )
            .await
            .expect("complete");
    }
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Succeeded);
    assert_eq!(
        store.create_batch(first).await.expect("after the end"),
        Created::Existing
    );
    assert_eq!(
        all_events(store, &batch_id)
            .await
            .last()
            .map(|event| event.kind),
        Some(EventKind::BatchFinished)
    );
    // An idempotent submission whose id was taken by a plain one: refused.
    store
        .create_batch(batch("plain", vec![op(0, &[])]))
        .await
        .expect("plain");
    assert!(matches!(
        store
            .create_batch(idempotent_batch("plain", "", "d1", vec![op(0, &[])]))
            .await,
        Err(StoreError::IdempotencyConflict(_))
    ));
}

pub async fn case_idempotent_add_ops_keeps_the_first_record(store: &dyn Store) {
    let batch_id = id("grow-once");
    store
        .create_batch(batch("grow-once", vec![op(0, &[])]))
        .await
        .expect("create");
    let once = SpawnOnce {
        key: "k1".to_owned(),
        record: "first answer".to_owned(),
    };
    assert_eq!(
        store.spawn_record(&batch_id, "k1").await.expect("read"),
        None
    );
    store
        .add_ops(
            &batch_id,
            1,
            vec![op(0, &[])],
            b"c1".to_vec(),
            "",
            NOW + 1,
            Some(&once),
        )
        .await
        .expect("add_ops");
    assert_eq!(
        store.spawn_record(&batch_id, "k1").await.expect("read"),
        Some("first answer".to_owned())
    );
    // The same key again (even at the right index): nothing added.
    let retried = SpawnOnce {
        key: "k1".to_owned(),
        record: "second answer".to_owned(),
    };
    let refused = store
        .add_ops(
            &batch_id,
            2,
            vec![op(0, &[])],
            b"c2".to_vec(),
            "",
            NOW + 2,
            Some(&retried),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadySpawned { ref record, .. }) if record == "first answer"),
        "{refused:?}"
    );
    assert_eq!(meta(store, &batch_id).await.total, 2);
    let added_events = all_events(store, &batch_id)
        .await
        .iter()
        .filter(|event| event.kind == EventKind::OpsAdded)
        .count();
    assert_eq!(added_events, 1);
    // Another key, and none, add as usual.
    let other = SpawnOnce {
        key: "k2".to_owned(),
        record: "other".to_owned(),
    };
    store
        .add_ops(
            &batch_id,
            2,
            vec![op(0, &[])],
            b"c2".to_vec(),
            "",
            NOW + 3,
            Some(&other),
        )
        .await
        .expect("another key");
    store
        .add_ops(
            &batch_id,
            3,
            vec![op(0, &[])],
            b"c3".to_vec(),
            "",
            NOW + 4,
            None,
        )
        .await
        .expect("no key");
    assert_eq!(meta(store, &batch_id).await.total, 4);
    // Keys are per batch.
    store
        .create_batch(batch("grow-once-2", vec![op(0, &[])]))
        .await
        .expect("create");
    assert_eq!(
        store
            .spawn_record(&id("grow-once-2"), "k1")
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .spawn_record(&id("no-such"), "k1")
            .await
            .expect("read"),
        None
    );
    // Once the batch ended, its keys still answer (before the state check).
    let claimed = store
        .claim(&batch_id, 10, NOW + 5, LEASE)
        .await
        .expect("claim");
    let done: Vec<Completion> = claimed.into_iter().map(success).collect();
    store
        .complete(&batch_id, &done, NOW + 6)
        .await
        .expect("complete");
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Succeeded);
    let after_end = store
        .add_ops(
            &batch_id,
            4,
            vec![op(0, &[])],
            Vec::new(),
            "",
            NOW + 7,
            Some(&retried),
        )
        .await;
    assert!(
        matches!(after_end, Err(StoreError::AlreadySpawned { .. })),
        "{after_end:?}"
    );
}
