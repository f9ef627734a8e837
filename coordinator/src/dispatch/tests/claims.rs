//! Claims: bounded by credits and `max_parallel`, by priority, shared
//! fairly between tenants and batches.

use volley_store::OpState;

use super::*;

#[tokio::test]
async fn claims_never_exceed_the_free_credits() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 2).await;
    let batch = harness.submit(batch(ops(5, "k"))).await;
    harness.step().await;

    let sent = worker.assignments();
    assert_eq!(sent.len(), 2);
    let states = harness.states(&batch).await;
    let running = states
        .iter()
        .filter(|state| **state == OpState::Running)
        .count();
    let ready = states
        .iter()
        .filter(|state| **state == OpState::Ready)
        .count();
    assert_eq!((running, ready), (2, 3), "nothing claimed past the credits");
    assert_eq!(harness.busy_of("w"), Some(2));

    // One result returns one credit: one more op.
    harness.report(&worker, &sent[..1], true, "").await;
    harness.step().await;
    assert_eq!(worker.assignments().len(), 1);
    assert_eq!(harness.busy_of("w"), Some(2));
}

#[tokio::test]
async fn max_parallel_bounds_what_a_batch_has_in_flight() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 10).await;
    let mut limited = batch(ops(5, "k"));
    limited.max_parallel = 2;
    let batch = harness.submit(limited).await;
    harness.step().await;

    let sent = worker.assignments();
    assert_eq!(sent.len(), 2);
    assert_eq!(harness.in_flight(&batch), Some(2));
    // The store bounds a claim by `max_parallel` too; the dispatcher asks
    // for no more than the room left, so the claim came back full and the
    // queue may still hold ops.
    let active = &harness.dispatcher.batches[&batch];
    assert!(active.maybe_ready, "asked for 2, got 2");
    assert_eq!(active.capacity(), 0);
    let why = harness.dispatcher.why(&batch, 4);
    assert!(
        why.reasons
            .iter()
            .any(|reason| reason.contains("max_parallel 2 holds it back")),
        "{:?}",
        why.reasons
    );

    harness.report(&worker, &sent, true, "").await;
    harness.step().await;
    assert_eq!(worker.assignments().len(), 2);
    assert_eq!(harness.in_flight(&batch), Some(2));
}

#[tokio::test]
async fn returned_credits_never_exceed_the_slots() {
    let mut harness = harness().await;
    let worker = harness.join("w", &["k"], 2).await;
    harness
        .dispatcher
        .handle(Command::Completed {
            conn: worker.conn,
            returned: 5,
            per_batch: Vec::new(),
        })
        .await;
    assert_eq!(harness.busy_of("w"), Some(0));
    assert_eq!(harness.dispatcher.free_credits(), 2);
}

#[tokio::test]
async fn higher_priorities_are_claimed_first() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    let mut low = op("low", "k");
    low.priority = v1::Priority::Low as i32;
    let mut critical = op("critical", "k");
    critical.priority = v1::Priority::Critical as i32;
    let mut high = op("high", "k");
    high.priority = v1::Priority::High as i32;
    harness.submit(batch(vec![low, critical, high])).await;

    let mut order = Vec::new();
    for _ in 0..3 {
        harness.step().await;
        let sent = worker.assignments();
        assert_eq!(sent.len(), 1, "one slot, one op at a time");
        order.push(sent[0].op_id.clone());
        harness.report(&worker, &sent, true, "").await;
    }
    assert_eq!(order, vec!["critical", "high", "low"]);
}

#[tokio::test]
async fn batches_share_the_credits_evenly() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 4).await;
    let first = harness.submit(batch(ops(10, "k"))).await;
    let second = harness.submit(batch(ops(10, "k"))).await;
    harness.step().await;

    let sent = worker.assignments();
    let of = |batch: &BatchId| {
        sent.iter()
            .filter(|assignment| assignment.batch_id == batch.as_str())
            .count()
    };
    assert_eq!((of(&first), of(&second)), (2, 2));
}

#[tokio::test]
async fn credits_take_turns_between_batches() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 1).await;
    harness.submit(batch(ops(3, "k"))).await;
    harness.submit(batch(ops(3, "k"))).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        harness.step().await;
        let sent = worker.assignments();
        assert_eq!(sent.len(), 1);
        order.push(sent[0].batch_id.clone());
        harness.report(&worker, &sent, true, "").await;
    }
    assert_ne!(order[0], order[1]);
    assert_eq!(order[0], order[2]);
    assert_eq!(order[1], order[3]);
}

#[tokio::test]
async fn a_tenant_with_many_batches_gets_what_a_tenant_with_one_gets() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 4).await;
    for _ in 0..3 {
        let mut many = batch(ops(10, "k"));
        many.tenant = "many".to_owned();
        harness.submit(many).await;
    }
    let mut one = batch(ops(10, "k"));
    one.tenant = "one".to_owned();
    let lone = harness.submit(one).await;
    harness.step().await;

    let sent = worker.assignments();
    assert_eq!(sent.len(), 4);
    let to_lone = sent
        .iter()
        .filter(|assignment| assignment.batch_id == lone.as_str())
        .count();
    assert_eq!(to_lone, 2, "half the credits for the tenant with one batch");
}

#[tokio::test]
async fn credits_a_batch_leaves_unused_go_to_the_others() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 6).await;
    let small = harness.submit(batch(ops(1, "k"))).await;
    let big = harness.submit(batch(ops(10, "k"))).await;
    harness.step().await;

    let sent = worker.assignments();
    let of = |batch: &BatchId| {
        sent.iter()
            .filter(|assignment| assignment.batch_id == batch.as_str())
            .count()
    };
    assert_eq!((of(&small), of(&big)), (1, 5));
}

#[tokio::test]
async fn an_op_the_plan_does_not_know_fails_for_good() {
    let mut harness = harness().await;
    let mut worker = harness.join("w", &["k"], 4).await;
    // The store holds two ops, the stored spec (and so every plan) one.
    let id = BatchId::new("short");
    let spec_of = |count: usize| StoredSpec {
        base: batch(ops(count, "k")).encode_to_vec(),
        added: Vec::new(),
    };
    let two = replan(&id, &spec_of(2)).expect("plans");
    harness
        .store
        .create_batch(new_batch(&two, spec_of(1).base))
        .await
        .expect("create");
    let one = replan(&id, &spec_of(1)).expect("plans");
    harness
        .dispatcher
        .handle(Command::BatchAdded(Arc::new(one)))
        .await;
    harness.step().await;

    assert_eq!(op_ids(&worker.assignments()), vec!["op0"]);
    let records = harness.records(&id).await;
    assert_eq!(records[1].state, OpState::Failed);
    assert_eq!(records[1].error, "the coordinator has no plan for this op");
    assert_eq!(harness.in_flight(&id), Some(1), "the failed claim let go");
}
