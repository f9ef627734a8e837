//! Conformance cases of the ready-queue depth and the ready gauge.

use super::*;

fn at(priority: u8, deps: u32, dependents: &[u32]) -> NewOp {
    NewOp {
        priority,
        ..op(deps, dependents)
    }
}

fn depth(by_priority: [u64; PRIORITY_LEVELS as usize]) -> ReadyDepth {
    ReadyDepth { by_priority }
}

pub async fn case_ready_depth_counts_queued_ops_per_priority(store: &dyn Store) {
    let (first, second) = (id("depth-a"), id("depth-b"));
    // Two critical, one high, three low ready; one op waiting (not counted).
    store
        .create_batch(batch(
            "depth-a",
            vec![
                at(0, 0, &[6]),
                at(0, 0, &[]),
                at(1, 0, &[]),
                at(3, 0, &[]),
                at(3, 0, &[]),
                at(3, 0, &[]),
                at(2, 1, &[]),
            ],
        ))
        .await
        .expect("create");
    store
        .create_batch(batch("depth-b", vec![at(2, 0, &[]), at(2, 0, &[])]))
        .await
        .expect("create");
    let both = [first.clone(), second.clone()];
    assert_eq!(
        store.ready_depth(&both).await.expect("depth"),
        depth([2, 1, 2, 3])
    );
    assert_eq!(
        store
            .ready_depth(std::slice::from_ref(&first))
            .await
            .expect("depth"),
        depth([2, 1, 0, 3])
    );
    assert_eq!(store.ready_depth(&[]).await.expect("depth").total(), 0);
    assert_eq!(
        store
            .ready_depth(&[id("depth-ghost")])
            .await
            .expect("depth"),
        ReadyDepth::default()
    );

    // Claimed ops leave the count; an op made ready joins it.
    let claimed = store.claim(&first, 2, NOW + 1, LEASE).await.expect("claim");
    assert_eq!(claimed, vec![super::claimed(0, 1), super::claimed(1, 1)]);
    assert_eq!(
        store.ready_depth(&both).await.expect("depth"),
        depth([0, 1, 2, 3])
    );
    store
        .complete(&first, &[success(claimed[0])], NOW + 20)
        .await
        .expect("complete");
    assert_eq!(
        store.ready_depth(&both).await.expect("depth"),
        depth([0, 1, 3, 3])
    );

    // A finished batch counts 0.
    let claimed = store
        .claim(&second, 2, NOW + 1, LEASE)
        .await
        .expect("claim");
    let outcome = store
        .complete(
            &second,
            &claimed
                .iter()
                .map(|claim| success(*claim))
                .collect::<Vec<_>>(),
            NOW + 20,
        )
        .await
        .expect("complete");
    assert_eq!(outcome.finished, Some(BatchState::Succeeded));
    assert_eq!(
        store.ready_depth(&both).await.expect("depth"),
        depth([0, 1, 1, 3])
    );
    assert_eq!(store.ready_depth(&both).await.expect("depth").total(), 5);

    // A cancelled batch too.
    store
        .cancel(&first, "enough", NOW + 30)
        .await
        .expect("cancel");
    assert_eq!(
        store.ready_depth(&both).await.expect("depth"),
        ReadyDepth::default()
    );
}

pub async fn case_ready_gauge_is_set_to_the_total_capped(store: &dyn Store) {
    for (total, expected) in [
        (5, 5),
        (3, 3),
        (3, 3),
        (0, 0),
        (0, 0),
        (1_500, 1_500),
        (READY_GAUGE_CAP + 1, READY_GAUGE_CAP),
        (7, 7),
    ] {
        assert_eq!(
            store.publish_ready_gauge(total).await.expect("publish"),
            expected,
            "gauge set to {total}"
        );
    }
}
