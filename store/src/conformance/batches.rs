//! Conformance cases of a batch as a whole: creation (duplicate and
//! empty batches, unknown ids), its event log, cancel, its deadline, lost
//! batches, blocked ops' events, listing, and retention.

use super::*;

pub async fn case_cancel_returns_running_and_is_idempotent(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("cancel");
    store
        .create_batch(batch("cancel", vec![op(0, &[2]), op(0, &[]), op(1, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    let outcome = store
        .cancel(&batch_id, "user asked", NOW + 50)
        .await
        .expect("cancel");
    assert_eq!(
        outcome,
        CancelOutcome {
            running: vec![claimed(0, 1)],
            cancelled: 3,
        }
    );
    let meta_after = meta(store, &batch_id).await;
    assert_eq!(meta_after.state, BatchState::Cancelled);
    assert_eq!(meta_after.error, "cancelled: user asked");
    assert_eq!(meta_after.finished_ms, Some(NOW + 50));
    assert_eq!((meta_after.cancelled, meta_after.running), (3, 0));
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(records[0].attempts, 1);
    assert_eq!(records[2].error, "cancelled: user asked");
    assert!(
        records
            .iter()
            .all(|record| record.state == OpState::Cancelled)
    );
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpCancelled, Some(0), 1),
            (OpCancelled, Some(1), 0),
            (OpCancelled, Some(2), 0),
            (BatchFinished, None, 0),
        ]
    );
    assert_eq!(
        all_events(store, &batch_id).await[5].batch_state,
        Some(BatchState::Cancelled)
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
    // Again: nothing changes.
    let again = store
        .cancel(&batch_id, "twice", NOW + 60)
        .await
        .expect("cancel");
    assert_eq!(again, CancelOutcome::default());
    assert_eq!(event_shapes(store, &batch_id).await.len(), shapes.len());
    assert_eq!(meta(store, &batch_id).await, meta_after);
    assert_eq!(indices(store, &batch_id, 10).await, Vec::<u32>::new());
}

pub async fn case_events_are_gapless_and_resumable(store: &dyn Store) {
    let batch_id = id("events");
    store
        .create_batch(batch("events", vec![op(0, &[1]), op(1, &[2]), op(1, &[])]))
        .await
        .expect("create");
    for index in 0..3 {
        run_one(store, &batch_id, index).await;
        // The latest seq is the last of the stream as it grows.
        let so_far = all_events(store, &batch_id).await;
        assert_eq!(
            store.last_event_seq(&batch_id).await.expect("last seq"),
            so_far.last().map_or(0, |event| event.seq)
        );
    }
    let all = all_events(store, &batch_id).await;
    assert_eq!(all.len(), 8);
    assert_eq!(store.last_event_seq(&batch_id).await.expect("last"), 8);
    let seqs: Vec<u64> = all.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    for after in 0..=all.len() {
        let page = store
            .events(&batch_id, after as u64, 3)
            .await
            .expect("events");
        let end = (after + 3).min(all.len());
        assert_eq!(page, all[after..end].to_vec(), "after {after}");
    }
    assert_eq!(
        store.events(&batch_id, 100, 10).await.expect("events"),
        Vec::<Event>::new()
    );
    assert_eq!(
        store.events(&id("no-such"), 0, 10).await.expect("events"),
        Vec::<Event>::new()
    );
    assert_eq!(
        store
            .last_event_seq(&id("no-such"))
            .await
            .expect("last seq"),
        0
    );
}

pub async fn case_duplicate_batch_id_is_rejected(store: &dyn Store) {
    let batch_id = id("dup");
    store
        .create_batch(batch("dup", vec![op(0, &[])]))
        .await
        .expect("create");
    let again = store
        .create_batch(batch("dup", vec![op(0, &[]), op(0, &[])]))
        .await;
    assert!(matches!(again, Err(StoreError::BatchExists(ref reused)) if *reused == batch_id));
    assert_eq!(meta(store, &batch_id).await.total, 1);
    assert_eq!(all_events(store, &batch_id).await.len(), 1);
}

pub async fn case_unknown_batch(store: &dyn Store) {
    let batch_id = id("ghost");
    let fence = stranger();
    assert_eq!(store.meta(&batch_id).await.expect("meta"), None);
    assert_eq!(store.batch_spec(&batch_id).await.expect("spec"), None);
    assert!(matches!(
        store.claim(&batch_id, 1, NOW, LEASE).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store
            .complete(&batch_id, &[success(claimed(0, 1))], NOW)
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.cancel(&batch_id, "x", NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.op_records(&batch_id).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.renew_leases(&batch_id, &[claimed(0, 1)], NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.expire_leases(&batch_id, NOW, &fence).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.return_ops(&batch_id, &[claimed(0, 1)], NOW).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.expire_deadline(&batch_id, NOW, &fence).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store.op_waits(&batch_id, 0).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

pub async fn case_empty_batch_finishes_at_once(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("empty");
    store
        .create_batch(batch("empty", Vec::new()))
        .await
        .expect("create");
    let meta = meta(store, &batch_id).await;
    assert_eq!((meta.state, meta.total), (BatchState::Succeeded, 0));
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![(BatchSubmitted, None, 0), (BatchFinished, None, 0)]
    );
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
}

pub async fn case_list_batches_of_one_tenant(store: &dyn Store) {
    for (name, tenant, created_ms) in [
        ("a-old", "a", NOW),
        ("b-only", "b", NOW + 100),
        ("a-new", "a", NOW + 200),
    ] {
        let mut new_batch = batch(name, vec![op(0, &[])]);
        new_batch.created_ms = created_ms;
        new_batch.tenant = tenant.to_owned();
        store.create_batch(new_batch).await.expect("create");
    }
    let names = |metas: Vec<BatchMeta>| -> Vec<(String, String)> {
        metas
            .into_iter()
            .map(|meta| (meta.id.into_string(), meta.tenant))
            .collect()
    };
    assert_eq!(
        names(store.list_batches(10, Some("a")).await.expect("list a")),
        vec![
            ("a-new".to_owned(), "a".to_owned()),
            ("a-old".to_owned(), "a".to_owned())
        ]
    );
    assert_eq!(
        names(store.list_batches(1, Some("a")).await.expect("list a")),
        vec![("a-new".to_owned(), "a".to_owned())]
    );
    assert_eq!(
        names(store.list_batches(10, Some("b")).await.expect("list b")),
        vec![("b-only".to_owned(), "b".to_owned())]
    );
    assert!(
        store
            .list_batches(10, Some("c"))
            .await
            .expect("list c")
            .is_empty()
    );
    assert_eq!(store.list_batches(10, None).await.expect("list").len(), 3);
    let meta = store
        .meta(&id("b-only"))
        .await
        .expect("meta")
        .expect("exists");
    assert_eq!(meta.tenant, "b");
}

pub async fn case_list_batches_newest_first(store: &dyn Store) {
    for (name, created_ms) in [("old", NOW), ("newest", NOW + 300), ("middle", NOW + 200)] {
        let mut new_batch = batch(name, vec![op(0, &[])]);
        new_batch.created_ms = created_ms;
        store.create_batch(new_batch).await.expect("create");
    }
    let listed: Vec<String> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id.into_string())
        .collect();
    assert_eq!(listed, vec!["newest", "middle", "old"]);
    let limited = store.list_batches(2, None).await.expect("list");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].name, "newest-name");
    assert_eq!(limited[0].created_ms, NOW + 300);
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![id("old"), id("middle"), id("newest")]
    );
    let epoch = store.epoch().await.expect("epoch");
    assert!(!epoch.is_empty());
    assert_eq!(store.epoch().await.expect("epoch"), epoch);
}

pub async fn case_deadline_cancels_and_fails_the_batch(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("deadline");
    let mut new_batch = batch(
        "deadline",
        vec![op(0, &[]), op(0, &[]), op(0, &[3]), op(1, &[])],
    );
    new_batch.deadline_ms = NOW + 1_000;
    store.create_batch(new_batch).await.expect("create");
    let fence = hold(store, &batch_id, NOW).await;
    let running = store
        .claim(&batch_id, 2, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1), claimed(1, 1)]);
    store
        .complete(&batch_id, &[success(running[1])], NOW + 5)
        .await
        .expect("complete");
    let outcome = store
        .expire_deadline(&batch_id, NOW + 999, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
    let outcome = store
        .expire_deadline(&batch_id, NOW + 1_000, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome.finished, Some(BatchState::Failed));
    assert_eq!(outcome.recorded, 3);
    let meta_after = meta(store, &batch_id).await;
    assert_eq!(meta_after.state, BatchState::Failed);
    assert_eq!(meta_after.error, "deadline exceeded");
    assert_eq!(meta_after.finished_ms, Some(NOW + 1_000));
    assert_eq!(
        (
            meta_after.succeeded,
            meta_after.cancelled,
            meta_after.running
        ),
        (1, 3, 0)
    );
    let records = store.op_records(&batch_id).await.expect("records");
    assert_eq!(
        records
            .iter()
            .map(|record| record.state)
            .collect::<Vec<_>>(),
        vec![
            OpState::Cancelled,
            OpState::Succeeded,
            OpState::Cancelled,
            OpState::Cancelled
        ]
    );
    assert_eq!(records[0].error, "cancelled: the batch's deadline passed");
    let shapes = event_shapes(store, &batch_id).await;
    assert_eq!(
        shapes[shapes.len() - 4..],
        [
            (OpCancelled, Some(0), 1),
            (OpCancelled, Some(2), 0),
            (OpCancelled, Some(3), 0),
            (BatchFinished, None, 0),
        ]
    );
    let events = all_events(store, &batch_id).await;
    let finished = events.last().expect("events");
    assert_eq!(finished.batch_state, Some(BatchState::Failed));
    assert_eq!(finished.message, "deadline exceeded");
    assert_eq!(
        store.active_batches().await.expect("active"),
        Vec::<BatchId>::new()
    );
    // The running op's late result is stale; again changes nothing.
    let outcome = store
        .complete(&batch_id, &[success(running[0])], NOW + 1_001)
        .await
        .expect("complete");
    assert_eq!(outcome.stale, vec![0]);
    let outcome = store
        .expire_deadline(&batch_id, NOW + 2_000, &fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(all_events(store, &batch_id).await.len(), events.len());
    // No deadline: never.
    let batch_id = id("no-deadline");
    store
        .create_batch(batch("no-deadline", vec![op(0, &[])]))
        .await
        .expect("create");
    let late_fence = hold(store, &batch_id, u64::MAX / 2).await;
    let outcome = store
        .expire_deadline(&batch_id, u64::MAX / 2, &late_fence)
        .await
        .expect("deadline");
    assert_eq!(outcome, CompleteOutcome::default());
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
}

pub async fn case_mark_lost_marks_unknown_batches_only(store: &dyn Store) {
    let kept = id("kept");
    store
        .create_batch(batch("kept", vec![op(0, &[])]))
        .await
        .expect("create");
    let reason = "the store restarted empty";
    let marked = store
        .mark_lost(&[id("lost-a"), kept.clone(), id("lost-b")], reason, NOW + 5)
        .await
        .expect("mark_lost");
    assert_eq!(marked, vec![id("lost-a"), id("lost-b")]);
    let lost = meta(store, &id("lost-a")).await;
    assert_eq!(lost.state, BatchState::Lost);
    assert_eq!(lost.error, reason);
    assert_eq!(lost.name, "");
    assert_eq!((lost.total, lost.running, lost.done()), (0, 0, 0));
    assert_eq!(lost.created_ms, NOW + 5);
    assert_eq!(lost.finished_ms, Some(NOW + 5));
    let events = all_events(store, &id("lost-a")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[0].kind, EventKind::BatchFinished);
    assert_eq!(events[0].batch_state, Some(BatchState::Lost));
    assert_eq!(events[0].message, reason);
    assert_eq!(events[0].at_ms, NOW + 5);
    let kept_meta = meta(store, &kept).await;
    assert_eq!(kept_meta.state, BatchState::Running);
    assert_eq!(all_events(store, &kept).await.len(), 1);
    assert_eq!(
        store.active_batches().await.expect("active"),
        vec![kept.clone()]
    );
    let listed: Vec<BatchId> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id)
        .collect();
    assert!(listed.contains(&id("lost-a")), "{listed:?}");
    // Marked once: held now, so left alone.
    let again = store
        .mark_lost(&[id("lost-a")], "again", NOW + 9)
        .await
        .expect("mark_lost");
    assert_eq!(again, Vec::<BatchId>::new());
    assert_eq!(meta(store, &id("lost-a")).await.error, reason);
    assert!(
        store
            .claim(&id("lost-a"), 1, NOW + 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );
}

pub async fn case_note_blocked_appends_an_event_only(store: &dyn Store) {
    use EventKind::*;
    let batch_id = id("blocked");
    let marker = id("blocked-marker");
    let mut receiver = store.doorbells();
    // 0 → 1, and 2 alone.
    store
        .create_batch(batch("blocked", vec![op(0, &[1]), op(1, &[]), op(0, &[])]))
        .await
        .expect("create");
    let running = store
        .claim(&batch_id, 1, NOW + 1, LEASE)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    // Bells arrive in order: once the marker's are in, the batch's are too.
    store
        .create_batch(batch("blocked-marker", vec![op(0, &[])]))
        .await
        .expect("create");
    expect_bells(
        &mut receiver,
        &[
            Doorbell::Batch(marker.clone()),
            Doorbell::Started(marker.clone()),
        ],
    )
    .await;
    let before = meta(store, &batch_id).await;
    let message = "no live worker runs `gpu` ops; it waits until one connects";
    // Waiting, ready and running ops can be noted.
    assert!(
        store
            .note_blocked(&batch_id, 1, message, NOW + 5)
            .await
            .expect("note_blocked")
    );
    // Only the events bell: a note makes nothing claimable.
    expect_exact_bell(&mut receiver, &Doorbell::Events(batch_id.clone())).await;
    assert!(
        store
            .note_blocked(&batch_id, 2, "ready", NOW + 6)
            .await
            .expect("note_blocked")
    );
    assert!(
        store
            .note_blocked(&batch_id, 0, "running", NOW + 7)
            .await
            .expect("note_blocked")
    );
    // Nothing else changed.
    assert_eq!(meta(store, &batch_id).await, before);
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Running, OpState::Waiting, OpState::Ready]
    );
    assert_eq!(op_waits(store, &batch_id, 1).await.pending, 1);
    // An ended op is not noted.
    store
        .complete(&batch_id, &[failure(running[0], "bad")], NOW + 20)
        .await
        .expect("complete");
    assert!(
        !store
            .note_blocked(&batch_id, 0, "late", NOW + 21)
            .await
            .expect("note_blocked")
    );
    assert!(
        !store
            .note_blocked(&batch_id, 1, "skipped by now", NOW + 22)
            .await
            .expect("note_blocked")
    );
    let events = all_events(store, &batch_id).await;
    let blocked: Vec<(Option<u32>, u32, &str, &str, u64)> = events
        .iter()
        .filter(|event| event.kind == OpBlocked)
        .map(|event| {
            (
                event.op_index,
                event.attempt,
                event.worker.as_str(),
                event.message.as_str(),
                event.at_ms,
            )
        })
        .collect();
    assert_eq!(
        blocked,
        vec![
            (Some(1), 0, "", message, NOW + 5),
            (Some(2), 0, "", "ready", NOW + 6),
            (Some(0), 1, "", "running", NOW + 7),
        ]
    );
    assert_eq!(
        event_shapes(store, &batch_id).await,
        vec![
            (BatchSubmitted, None, 0),
            (OpStarted, Some(0), 1),
            (OpBlocked, Some(1), 0),
            (OpBlocked, Some(2), 0),
            (OpBlocked, Some(0), 1),
            (OpFailed, Some(0), 1),
            (OpSkipped, Some(1), 0),
        ]
    );
    // Not once the batch ended, even for an op that never ran.
    store
        .cancel(&batch_id, "done", NOW + 30)
        .await
        .expect("cancel");
    assert!(
        !store
            .note_blocked(&batch_id, 2, "too late", NOW + 31)
            .await
            .expect("note_blocked")
    );
    // Unknown op or batch.
    assert!(matches!(
        store.note_blocked(&batch_id, 9, "nope", NOW + 32).await,
        Err(StoreError::BatchNotFound(_))
    ));
    assert!(matches!(
        store
            .note_blocked(&id("blocked-ghost"), 0, "nope", NOW + 33)
            .await,
        Err(StoreError::BatchNotFound(_))
    ));
}

/// `retain_ms`: a finished batch stays readable for its retention; then
/// `drop_expired` deletes its records and its own memory scope (a large,
/// chunked value too); a batch without retention, or still running, stays.
pub async fn case_finished_batch_expires_after_its_retention(store: &dyn Store) {
    let short = id("retain-short");
    let kept = id("retain-kept");
    let running = id("retain-running");
    for (batch_id, retain_ms) in [(&short, 300), (&kept, 0), (&running, 300)] {
        store
            .create_batch(NewBatch {
                retain_ms,
                ..batch(batch_id.as_str(), vec![op(0, &[])])
            })
            .await
            .expect("create");
    }
    put(store, &own(&short), "small", b"v").await;
    let large = vec![7_u8; 600 * 1024];
    put(store, &own(&short), "large", &large).await;
    run_one(store, &short, 0).await;
    run_one(store, &kept, 0).await;
    // Retained: everything still readable until its time comes.
    let finished = meta(store, &short).await;
    assert_eq!(finished.state, BatchState::Succeeded);
    let gone_at = finished.finished_ms.expect("finished_ms") + 300;
    assert_eq!(store.drop_expired(gone_at - 1, 10).await.expect("drop"), 0);
    assert!(
        !store
            .events(&short, 0, 100)
            .await
            .expect("events")
            .is_empty()
    );
    assert_eq!(store.drop_expired(gone_at, 10).await.expect("drop"), 1);
    assert!(store.meta(&short).await.expect("meta").is_none());
    // Nothing more to drop.
    assert_eq!(
        store
            .drop_expired(gone_at + 60_000, 10)
            .await
            .expect("drop"),
        0
    );
    assert!(
        store
            .events(&short, 0, 100)
            .await
            .expect("events")
            .is_empty()
    );
    assert!(store.batch_spec(&short).await.expect("spec").is_none());
    for key in ["small", "large"] {
        assert!(
            store
                .memory_get(&own(&short), key)
                .await
                .expect("get")
                .is_none(),
            "memory key {key} outlived its batch"
        );
    }
    let listed: Vec<BatchId> = store
        .list_batches(10, None)
        .await
        .expect("list")
        .into_iter()
        .map(|meta| meta.id)
        .collect();
    assert!(!listed.contains(&short));
    assert!(listed.contains(&kept) && listed.contains(&running));
    assert_eq!(meta(store, &kept).await.state, BatchState::Succeeded);
    assert_eq!(meta(store, &running).await.state, BatchState::Running);
}
