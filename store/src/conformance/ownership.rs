//! Conformance cases of several coordinators sharing a store: batch holds
//! and their fences, and the cluster's worker registry.

use super::*;

/// Real unix ms: for the cases where a hold must run out, which Redis
/// judges by its own clock and the in-memory store by the `now_ms` given.
fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
}

pub async fn case_hold_is_exclusive_and_extends(store: &dyn Store) {
    let batch_id = id("held");
    store
        .create_batch(batch("held", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let first = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    assert_eq!(first.coordinator, "c1");
    assert!(first.token >= 1, "{first:?}");
    // Holding again extends the hold with the same fence.
    let again = store
        .hold_batch(&batch_id, "c1", 60_000, now + 10)
        .await
        .expect("hold");
    assert_eq!(again, Some(first.clone()));
    // A second coordinator cannot take a held batch.
    assert_eq!(
        store
            .hold_batch(&batch_id, "c2", 60_000, now + 20)
            .await
            .expect("hold"),
        None
    );
    assert_eq!(
        store.batch_owner(&batch_id, now + 30).await.expect("owner"),
        Some(first.clone())
    );
    // The holder's fence works; another coordinator's made-up fence does not.
    store
        .expire_leases(&batch_id, now + 40, &first)
        .await
        .expect("the holder's fence");
    let forged = Fence {
        coordinator: "c2".to_owned(),
        token: first.token + 1,
    };
    let refused = store.expire_leases(&batch_id, now + 40, &forged).await;
    match refused {
        Err(StoreError::NotOwner { batch, holder }) => {
            assert_eq!(batch, batch_id);
            assert_eq!(holder.as_deref(), Some("c1"));
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    let error = StoreError::NotOwner {
        batch: batch_id.clone(),
        holder: Some("c1".to_owned()),
    };
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("c1"), "{error}");
}

pub async fn case_hold_runs_out_and_the_old_fence_is_refused(store: &dyn Store) {
    let batch_id = id("taken-over");
    let mut new_batch = batch(
        "taken-over",
        vec![
            retrying(3, RetryPolicy::default()),
            NewOp {
                wait_deadline_ms: 1,
                ..waiting_for(&["never"])
            },
        ],
    );
    new_batch.deadline_ms = 1;
    store.create_batch(new_batch).await.expect("create");
    let start = unix_now_ms();
    let old = store
        .hold_batch(&batch_id, "c1", 100, start)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    // A lease that is due at once, so expire_leases would act.
    let running = store
        .claim(&batch_id, 10, start, start)
        .await
        .expect("claim");
    assert_eq!(running, vec![claimed(0, 1)]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let now = unix_now_ms();
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let new = store
        .hold_batch(&batch_id, "c2", 60_000, now)
        .await
        .expect("hold")
        .expect("the old hold ran out: c2 takes it");
    assert_eq!(new.coordinator, "c2");
    assert!(new.token > old.token, "{new:?} after {old:?}");
    let events_before = all_events(store, &batch_id).await;
    // The old owner's fence is refused, and nothing changes.
    for refused in [
        store.expire_leases(&batch_id, now, &old).await,
        store.expire_deadline(&batch_id, now, &old).await,
        store.expire_waits(&batch_id, now, &old).await,
    ] {
        match refused {
            Err(StoreError::NotOwner { batch, holder }) => {
                assert_eq!(batch, batch_id);
                assert_eq!(holder.as_deref(), Some("c2"));
            }
            other => panic!("expected NotOwner, got {other:?}"),
        }
    }
    assert_eq!(
        states(store, &batch_id).await,
        vec![OpState::Running, OpState::Waiting]
    );
    assert_eq!(meta(store, &batch_id).await.state, BatchState::Running);
    assert_eq!(all_events(store, &batch_id).await, events_before);
    assert_eq!(
        op_waits(store, &batch_id, 0).await.lease_until_ms,
        Some(start)
    );
    // Nor can the old owner take it back while c2 holds it.
    assert_eq!(
        store
            .hold_batch(&batch_id, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    // The new owner's fence works.
    let outcome = store
        .expire_leases(&batch_id, now, &new)
        .await
        .expect("expire");
    assert_eq!(outcome.retried, vec![0]);
}

pub async fn case_release_lets_another_take_over_at_once(store: &dyn Store) {
    let batch_id = id("released");
    store
        .create_batch(batch("released", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    let first = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    // A fence that is not the hold releases nothing.
    let stale = Fence {
        coordinator: "c1".to_owned(),
        token: first.token + 7,
    };
    store
        .release_batch(&batch_id, &stale)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        Some(first.clone())
    );
    store
        .release_batch(&batch_id, &first)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now).await.expect("owner"),
        None
    );
    let second = store
        .hold_batch(&batch_id, "c2", 60_000, now + 1)
        .await
        .expect("hold")
        .expect("released: c2 takes it at once");
    assert!(second.token > first.token, "{second:?} after {first:?}");
    assert!(matches!(
        store.expire_leases(&batch_id, now + 2, &first).await,
        Err(StoreError::NotOwner { .. })
    ));
    // The old fence cannot release the new hold.
    store
        .release_batch(&batch_id, &first)
        .await
        .expect("release");
    assert_eq!(
        store.batch_owner(&batch_id, now + 3).await.expect("owner"),
        Some(second.clone())
    );
    // Taking it back after the release is a new token again.
    store
        .release_batch(&batch_id, &second)
        .await
        .expect("release");
    // Released: nobody holds it, so even the last holder's fence is refused.
    match store.expire_leases(&batch_id, now + 4, &second).await {
        Err(StoreError::NotOwner { holder, .. }) => assert_eq!(holder, None),
        other => panic!("expected NotOwner, got {other:?}"),
    }
    let third = store
        .hold_batch(&batch_id, "c1", 60_000, now + 4)
        .await
        .expect("hold")
        .expect("released: c1 takes it");
    assert!(third.token > second.token, "{third:?} after {second:?}");
}

pub async fn case_hold_refuses_finished_and_unknown_batches(store: &dyn Store) {
    let batch_id = id("hold-finished");
    store
        .create_batch(batch("hold-finished", vec![op(0, &[])]))
        .await
        .expect("create");
    let now = unix_now_ms();
    let fence = store
        .hold_batch(&batch_id, "c1", 60_000, now)
        .await
        .expect("hold")
        .expect("free: c1 takes it");
    run_one(store, &batch_id, 0).await;
    // Finished: nobody can hold it, its last holder included.
    for coordinator in ["c1", "c2"] {
        assert_eq!(
            store
                .hold_batch(&batch_id, coordinator, 60_000, now + 1)
                .await
                .expect("hold"),
            None
        );
    }
    // Its holder's fence still only finds nothing to do.
    assert_eq!(
        store
            .expire_leases(&batch_id, now + 2, &fence)
            .await
            .expect("expire"),
        CompleteOutcome::default()
    );
    // Cancelled and lost batches cannot be held either.
    let cancelled = id("hold-cancelled");
    store
        .create_batch(batch("hold-cancelled", vec![op(0, &[])]))
        .await
        .expect("create");
    store.cancel(&cancelled, "user", NOW).await.expect("cancel");
    assert_eq!(
        store
            .hold_batch(&cancelled, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    let lost = id("hold-lost");
    store
        .mark_lost(std::slice::from_ref(&lost), "gone", NOW)
        .await
        .expect("mark_lost");
    assert_eq!(
        store
            .hold_batch(&lost, "c1", 60_000, now)
            .await
            .expect("hold"),
        None
    );
    assert_eq!(store.batch_owner(&lost, now).await.expect("owner"), None);
    // Unknown: not found; it has no owner and releasing it is harmless.
    let ghost = id("hold-ghost");
    assert!(matches!(
        store.hold_batch(&ghost, "c1", 60_000, now).await,
        Err(StoreError::BatchNotFound(ref missing)) if *missing == ghost
    ));
    assert_eq!(store.batch_owner(&ghost, now).await.expect("owner"), None);
    store
        .release_batch(&ghost, &stranger())
        .await
        .expect("release");
    assert!(matches!(
        store.expire_deadline(&ghost, now, &stranger()).await,
        Err(StoreError::BatchNotFound(_))
    ));
}

fn worker(worker_id: &str, slots: u32, busy: u32) -> WorkerEntry {
    WorkerEntry {
        worker_id: worker_id.to_owned(),
        kinds: vec!["shell".to_owned(), "http".to_owned()],
        labels: BTreeMap::from([("zone".to_owned(), "eu-1".to_owned())]),
        slots,
        busy,
        draining: false,
    }
}

/// A worker handing its work back: listed so, wherever it is connected.
fn draining(worker_id: &str, slots: u32, busy: u32) -> WorkerEntry {
    WorkerEntry {
        draining: true,
        ..worker(worker_id, slots, busy)
    }
}

pub async fn case_worker_registry_lists_live_entries(store: &dyn Store) {
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        Vec::<(String, WorkerEntry)>::new()
    );
    store
        .publish_workers(
            "c2",
            &[worker("w-b", 4, 1), worker("w-a", 2, 0)],
            NOW + 10_000,
        )
        .await
        .expect("publish");
    store
        .publish_workers("c1", &[draining("w-z", 8, 8)], NOW + 10_000)
        .await
        .expect("publish");
    // No workers: an entry that lists nothing.
    store
        .publish_workers("c0", &[], NOW + 10_000)
        .await
        .expect("publish");
    let listed = |entries: &[(&str, WorkerEntry)]| -> Vec<(String, WorkerEntry)> {
        entries
            .iter()
            .map(|(coordinator, entry)| (coordinator.to_string(), entry.clone()))
            .collect()
    };
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        listed(&[
            ("c1", draining("w-z", 8, 8)),
            ("c2", worker("w-a", 2, 0)),
            ("c2", worker("w-b", 4, 1)),
        ])
    );
    // Republishing replaces the coordinator's entry.
    store
        .publish_workers("c2", &[worker("w-c", 3, 2)], NOW + 20_000)
        .await
        .expect("publish");
    // Ran out a moment ago: not listed, but kept for a while.
    store
        .publish_workers("c3", &[worker("w-late", 1, 0)], NOW - 1)
        .await
        .expect("publish");
    // Ran out more than a minute ago: deleted by the next listing.
    store
        .publish_workers(
            "c4",
            &[worker("w-gone", 1, 0)],
            NOW - WORKERS_FORGET_AFTER_MS - 1_000,
        )
        .await
        .expect("publish");
    assert_eq!(
        store.workers(NOW).await.expect("workers"),
        listed(&[("c1", draining("w-z", 8, 8)), ("c2", worker("w-c", 3, 2))])
    );
    // Seen from earlier: c3 is still there, c4 is gone for good.
    assert_eq!(
        store
            .workers(NOW - WORKERS_FORGET_AFTER_MS - 5_000)
            .await
            .expect("workers"),
        listed(&[
            ("c1", draining("w-z", 8, 8)),
            ("c2", worker("w-c", 3, 2)),
            ("c3", worker("w-late", 1, 0)),
        ])
    );
    // The boundary: listed while until_ms >= now.
    assert_eq!(
        store.workers(NOW + 20_000).await.expect("workers"),
        listed(&[("c2", worker("w-c", 3, 2))])
    );
}
