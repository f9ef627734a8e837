//! Conformance cases of the memory verbs (put, get, compare-and-set,
//! delete, list, incr, TTLs, large values, the change log), concurrent
//! writers included (those cases take the store shared, to spawn tasks).

use super::*;

pub async fn case_memory_put_get_version_content_type(store: &dyn Store) {
    let scope = shared("pg");
    let first = store
        .memory_put(&scope, "k", b"v1", &typed("application/json"), NOW)
        .await
        .expect("put");
    assert_eq!(
        first,
        PutOutcome {
            version: 1,
            unblocked: 0
        }
    );
    assert_eq!(
        store.memory_get(&scope, "k").await.expect("get"),
        Some(MemoryValue {
            value: b"v1".to_vec(),
            content_type: "application/json".to_owned(),
            version: 1,
        })
    );
    let second = store
        .memory_put(&scope, "k", b"v2", &typed("text/csv"), NOW)
        .await
        .expect("put");
    assert_eq!(second.version, 2);
    assert_eq!(
        store.memory_get(&scope, "k").await.expect("get"),
        Some(MemoryValue {
            value: b"v2".to_vec(),
            content_type: "text/csv".to_owned(),
            version: 2,
        })
    );
    assert_eq!(store.memory_get(&scope, "nope").await.expect("get"), None);
    // Scopes are apart: the same key of a batch scope or another namespace.
    assert_eq!(get(store, &own(&id("pg")), "k").await, None);
    assert_eq!(get(store, &shared("pg2"), "k").await, None);
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 2);
    assert_eq!(
        store
            .memory_revision(&shared("pg2"))
            .await
            .expect("revision"),
        0
    );
}

fn cas(if_version: u64) -> PutOptions {
    PutOptions {
        if_version: Some(if_version),
        ..typed("text/plain")
    }
}

pub async fn case_memory_compare_and_set(store: &dyn Store) {
    let scope = shared("cas-basic");
    // Create-only: version 0 means "must not exist".
    let created = store
        .memory_put(&scope, "k", b"a", &cas(0), NOW)
        .await
        .expect("create-only put");
    assert_eq!(created.version, 1);
    let again = store.memory_put(&scope, "k", b"b", &cas(0), NOW).await;
    assert!(
        matches!(again, Err(StoreError::VersionMismatch { ref key, expected: 0, actual: 1 }) if key == "k"),
        "{again:?}"
    );
    let swapped = store
        .memory_put(&scope, "k", b"c", &cas(1), NOW)
        .await
        .expect("cas put");
    assert_eq!(swapped.version, 2);
    let stale = store.memory_put(&scope, "k", b"d", &cas(1), NOW).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::VersionMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    let missing = store.memory_put(&scope, "other", b"x", &cas(5), NOW).await;
    assert!(
        matches!(
            missing,
            Err(StoreError::VersionMismatch {
                expected: 5,
                actual: 0,
                ..
            })
        ),
        "{missing:?}"
    );
    let value = store
        .memory_get(&scope, "k")
        .await
        .expect("get")
        .expect("k exists");
    assert_eq!((value.value, value.version), (b"c".to_vec(), 2));
    assert_eq!(store.memory_get(&scope, "other").await.expect("get"), None);
    // Refused writes log no change.
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 2);
}

pub async fn case_memory_delete_with_and_without_cas(store: &dyn Store) {
    let scope = shared("del");
    put(store, &scope, "k", b"1").await;
    let refused = store.memory_delete(&scope, "k", Some(2), NOW).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::VersionMismatch {
                expected: 2,
                actual: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(get(store, &scope, "k").await, Some(b"1".to_vec()));
    assert!(
        store
            .memory_delete(&scope, "k", Some(1), NOW)
            .await
            .expect("delete")
    );
    assert_eq!(get(store, &scope, "k").await, None);
    assert!(
        !store
            .memory_delete(&scope, "k", None, NOW)
            .await
            .expect("delete")
    );
    put(store, &scope, "plain", b"x").await;
    assert!(
        store
            .memory_delete(&scope, "plain", None, NOW)
            .await
            .expect("delete")
    );
    // Written again after a delete, a key starts over at version 1.
    let fresh = store
        .memory_put(&scope, "k", b"2", &cas(0), NOW)
        .await
        .expect("put");
    assert_eq!(fresh.version, 1);
    let listed: Vec<String> = store
        .memory_list(&scope, "", None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(listed, vec!["k"]);
}

pub async fn case_memory_list_prefix_pages(store: &dyn Store) {
    let scope = shared("list");
    for key in ["a/3", "b/1", "a/1", "a", "a/5", "a/2", "ab", "a/4"] {
        put(store, &scope, key, key.as_bytes()).await;
    }
    put(store, &scope, "a/2", b"again").await;
    store
        .memory_delete(&scope, "a/4", None, NOW)
        .await
        .expect("delete");
    let keys = |infos: Vec<MemoryKeyInfo>| -> Vec<String> {
        infos.into_iter().map(|info| info.key).collect()
    };
    let page1 = store
        .memory_list(&scope, "a/", None, 2)
        .await
        .expect("list");
    assert_eq!(page1[1].version, 2);
    assert_eq!(page1[1].size, 5);
    assert_eq!(page1[1].content_type, "text/plain");
    assert_eq!(page1[1].expires_at_ms, 0);
    assert_eq!(keys(page1), vec!["a/1", "a/2"]);
    let page2 = store
        .memory_list(&scope, "a/", Some("a/2"), 2)
        .await
        .expect("list");
    assert_eq!(keys(page2), vec!["a/3", "a/5"]);
    let page3 = store
        .memory_list(&scope, "a/", Some("a/5"), 2)
        .await
        .expect("list");
    assert_eq!(keys(page3), Vec::<String>::new());
    // `after_key` before the prefix: starts at the prefix.
    let from_start = store
        .memory_list(&scope, "a/", Some("0"), 10)
        .await
        .expect("list");
    assert_eq!(keys(from_start), vec!["a/1", "a/2", "a/3", "a/5"]);
    let all = store
        .memory_list(&scope, "", None, 100)
        .await
        .expect("list");
    assert_eq!(
        keys(all),
        vec!["a", "a/1", "a/2", "a/3", "a/5", "ab", "b/1"]
    );
    assert_eq!(
        store.memory_list(&scope, "", None, 0).await.expect("list"),
        Vec::new()
    );
    assert_eq!(
        store
            .memory_list(&shared("list-empty"), "", None, 10)
            .await
            .expect("list"),
        Vec::new()
    );
}

pub async fn case_memory_incr(store: &dyn Store) {
    let scope = shared("incr");
    let (value, outcome) = store.memory_incr(&scope, "n", 5, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (5, 1));
    let (value, outcome) = store.memory_incr(&scope, "n", -8, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (-3, 2));
    let stored = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!(
        stored,
        MemoryValue {
            value: b"-3".to_vec(),
            content_type: TEXT_CONTENT_TYPE.to_owned(),
            version: 2,
        }
    );
    put(store, &scope, "s", b"abc").await;
    let refused = store.memory_incr(&scope, "s", 1, NOW).await;
    assert!(
        matches!(refused, Err(StoreError::NotAnInteger { ref key }) if key == "s"),
        "{refused:?}"
    );
    let untouched = store
        .memory_get(&scope, "s")
        .await
        .expect("get")
        .expect("s exists");
    assert_eq!((untouched.value, untouched.version), (b"abc".to_vec(), 1));
    store
        .memory_put(&scope, "t", b"41", &typed("application/json"), NOW)
        .await
        .expect("put");
    let (value, outcome) = store.memory_incr(&scope, "t", 1, NOW).await.expect("incr");
    assert_eq!((value, outcome.version), (42, 2));
    let kept = store
        .memory_get(&scope, "t")
        .await
        .expect("get")
        .expect("t exists");
    assert_eq!(kept.content_type, "application/json");
    assert_eq!(kept.value, b"42".to_vec());
}

/// Only a guard against hanging while waiting for a TTL; never asserted on.
const TTL_DEADLINE: Duration = Duration::from_secs(20);
const TTL_POLL: Duration = Duration::from_millis(20);

pub async fn case_memory_ttl_expires(store: &dyn Store) {
    let scope = shared("ttl");
    let short = PutOptions {
        ttl_ms: Some(300),
        ..typed("text/plain")
    };
    store
        .memory_put(&scope, "short", b"s", &short, NOW)
        .await
        .expect("put");
    let large = vec![7u8; MEMORY_CHUNK_BYTES * 2 + 1];
    store
        .memory_put(&scope, "short-large", &large, &short, NOW)
        .await
        .expect("put");
    put(store, &scope, "long", b"l").await;
    let listed = store.memory_list(&scope, "", None, 10).await.expect("list");
    // The TTL may already have run out on a slow machine: only check what
    // is listed.
    for info in &listed {
        let expected = if info.key == "long" { 0 } else { NOW + 300 };
        assert_eq!(info.expires_at_ms, expected, "{}", info.key);
    }
    tokio::time::timeout(TTL_DEADLINE, async {
        while get(store, &scope, "short").await.is_some()
            || get(store, &scope, "short-large").await.is_some()
        {
            tokio::time::sleep(TTL_POLL).await;
        }
    })
    .await
    .expect("the short keys expired before the deadline");
    let keys: Vec<String> = store
        .memory_list(&scope, "", None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(keys, vec!["long"]);
    // An expired key is gone for compare-and-set too.
    let recreated = store
        .memory_put(&scope, "short", b"again", &cas(0), NOW)
        .await
        .expect("put");
    assert_eq!(recreated.version, 1);
}

pub async fn case_memory_large_value_round_trips(store: &dyn Store) {
    let scope = shared("large");
    let big: Vec<u8> = (0..(1024 * 1024 + 17))
        .map(|index: usize| (index * 31 % 251) as u8)
        .collect();
    let outcome = store
        .memory_put(
            &scope,
            "blob",
            &big,
            &typed("application/octet-stream"),
            NOW,
        )
        .await
        .expect("put");
    assert_eq!(outcome.version, 1);
    let read = store
        .memory_get(&scope, "blob")
        .await
        .expect("get")
        .expect("blob exists");
    assert_eq!(read.value.len(), big.len());
    assert!(read.value == big, "the 1 MiB value came back different");
    assert_eq!(read.content_type, "application/octet-stream");
    let info = store
        .memory_list(&scope, "blob", None, 1)
        .await
        .expect("list");
    assert_eq!(info[0].size, big.len() as u64);
    // Small over large, then large again (reversed) over small.
    put(store, &scope, "blob", b"tiny").await;
    assert_eq!(get(store, &scope, "blob").await, Some(b"tiny".to_vec()));
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    let outcome = store
        .memory_put(&scope, "blob", &reversed, &typed("x"), NOW)
        .await
        .expect("put");
    assert_eq!(outcome.version, 3);
    assert!(get(store, &scope, "blob").await == Some(reversed));
    let changes = store
        .memory_changes(&scope, "", 0, 10)
        .await
        .expect("changes");
    let carried: Vec<bool> = changes
        .iter()
        .map(|change| change.value.is_some())
        .collect();
    // Values above CHANGE_VALUE_LIMIT are not carried in changes.
    assert_eq!(carried, vec![false, true, false]);
}

pub async fn case_memory_changes_gapless_prefix_resumable(store: &dyn Store) {
    use MemoryChangeKind::*;
    let scope = shared("log");
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 0);
    assert_eq!(
        store
            .memory_changes(&scope, "", 0, 10)
            .await
            .expect("changes"),
        Vec::new()
    );
    put(store, &scope, "a/x", b"1").await;
    put(store, &scope, "b/y", b"2").await;
    store
        .memory_incr(&scope, "a/n", 3, NOW + 1)
        .await
        .expect("incr");
    store
        .memory_delete(&scope, "a/x", None, NOW + 2)
        .await
        .expect("delete");
    put(store, &scope, "a/x", b"5").await;
    let all = store
        .memory_changes(&scope, "", 0, 100)
        .await
        .expect("changes");
    type Shape<'a> = (u64, &'a str, MemoryChangeKind, u64, Option<&'a [u8]>);
    let shapes: Vec<Shape> = all
        .iter()
        .map(|change| {
            (
                change.revision,
                change.key.as_str(),
                change.kind,
                change.version,
                change.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            (1, "a/x", Put, 1, Some(b"1".as_slice())),
            (2, "b/y", Put, 1, Some(b"2".as_slice())),
            (3, "a/n", Put, 1, Some(b"3".as_slice())),
            (4, "a/x", Delete, 1, None),
            (5, "a/x", Put, 1, Some(b"5".as_slice())),
        ]
    );
    assert_eq!(all[0].content_type, "text/plain");
    assert_eq!(
        (all[0].at_ms, all[2].at_ms, all[3].at_ms),
        (NOW, NOW + 1, NOW + 2)
    );
    let prefixed: Vec<u64> = store
        .memory_changes(&scope, "a/", 0, 100)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(prefixed, vec![1, 3, 4, 5]);
    for after in 0..=5u64 {
        let page = store
            .memory_changes(&scope, "", after, 2)
            .await
            .expect("changes");
        let end = (after as usize + 2).min(all.len());
        assert_eq!(page, all[after as usize..end].to_vec(), "after {after}");
    }
    let prefixed_page: Vec<u64> = store
        .memory_changes(&scope, "a/", 1, 2)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(prefixed_page, vec![3, 4]);
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 5);
}

/// The change log cap of the store given to
/// [`case_memory_changes_trimmed`] (see [`conformance_tests!`](crate::conformance_tests)).
pub const SMALL_CHANGE_LOG_CAP: u64 = 10;

/// Needs a store built with a change log cap of [`SMALL_CHANGE_LOG_CAP`].
pub async fn case_memory_changes_trimmed(store: &dyn Store) {
    let scope = shared("trimmed");
    for index in 0..300u32 {
        put(store, &scope, &format!("k{index}"), b"v").await;
    }
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 300);
    let trimmed = store.memory_changes(&scope, "", 0, 10).await;
    match trimmed {
        Err(StoreError::ChangesTrimmed {
            ref scope,
            after,
            oldest,
        }) => {
            assert_eq!(scope, "namespace trimmed");
            assert_eq!(after, 0);
            assert!(
                oldest > 1 && oldest <= 300 - SMALL_CHANGE_LOG_CAP + 1,
                "{oldest}"
            );
        }
        other => panic!("expected ChangesTrimmed, got {other:?}"),
    }
    // The newest `cap` changes are kept, and resuming among them works.
    let resumed: Vec<u64> = store
        .memory_changes(&scope, "", 300 - SMALL_CHANGE_LOG_CAP, 100)
        .await
        .expect("changes")
        .iter()
        .map(|change| change.revision)
        .collect();
    assert_eq!(resumed, (291..=300).collect::<Vec<u64>>());
    assert_eq!(
        store
            .memory_changes(&scope, "", 300, 10)
            .await
            .expect("changes"),
        Vec::new()
    );
}

pub async fn case_concurrent_cas_increments_lose_none(store: std::sync::Arc<dyn Store>) {
    let scope = shared("cas-race");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.spawn(async move {
            let mut done = 0;
            while done < 50 {
                let current = store.memory_get(&scope, "n").await.expect("get");
                let (value, version) = match current {
                    Some(current) => {
                        let text = String::from_utf8(current.value).expect("utf-8");
                        (text.parse::<u64>().expect("a number"), current.version)
                    }
                    None => (0, 0),
                };
                let options = PutOptions {
                    if_version: Some(version),
                    ..PutOptions::default()
                };
                match store
                    .memory_put(
                        &scope,
                        "n",
                        (value + 1).to_string().as_bytes(),
                        &options,
                        NOW,
                    )
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StoreError::VersionMismatch { .. }) => {}
                    Err(error) => panic!("put: {error}"),
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let value = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!((value.value, value.version), (b"200".to_vec(), 200));
}

pub async fn case_concurrent_incr_from_four_tasks(store: std::sync::Arc<dyn Store>) {
    let scope = shared("incr-race");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                store.memory_incr(&scope, "n", 1, NOW).await.expect("incr");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let value = store
        .memory_get(&scope, "n")
        .await
        .expect("get")
        .expect("n exists");
    assert_eq!((value.value, value.version), (b"200".to_vec(), 200));
    assert_eq!(store.memory_revision(&scope).await.expect("revision"), 200);
}
