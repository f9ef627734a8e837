//! Memory scopes: the memory verbs, and `store_as` writes.

use super::*;

/// A `store_as` write of `data`'s op into `memory` (the batch's scope).
pub(super) fn store_as(
    inner: &mut Inner,
    memory: &MemoryScope,
    key: &str,
    value: Vec<u8>,
    now_ms: u64,
    cap: u64,
    data: &mut BatchData,
) -> Written {
    let options = PutOptions {
        content_type: TEXT_CONTENT_TYPE.to_owned(),
        ..PutOptions::default()
    };
    match inner.put(memory, key, value, &options, now_ms, cap, Some(data)) {
        Ok(written) => written,
        // No version check was asked for, so put cannot refuse.
        Err(_) => Written {
            version: 0,
            unblocked: 0,
            became_ready_current: 0,
            touched: Vec::new(),
        },
    }
}

pub(super) async fn memory_put(
    store: &MemoryStore,
    scope: &MemoryScope,
    key: &str,
    value: &[u8],
    options: &PutOptions,
    now_ms: u64,
) -> StoreResult<PutOutcome> {
    let cap = store.cap();
    let written = store
        .lock()
        .put(scope, key, value.to_vec(), options, now_ms, cap, None)?;
    store.ring_all(written.touched.into_iter().map(Doorbell::Batch).collect());
    store.ring_all(vec![Doorbell::Memory(scope.clone())]);
    Ok(PutOutcome {
        version: written.version,
        unblocked: written.unblocked,
    })
}

pub(super) async fn memory_get(
    store: &MemoryStore,
    scope: &MemoryScope,
    key: &str,
) -> StoreResult<Option<MemoryValue>> {
    let mut inner = store.lock();
    let Some(scope_data) = inner.scopes.get_mut(scope) else {
        return Ok(None);
    };
    Ok(scope_data.live(key).map(|entry| MemoryValue {
        value: entry.value.clone(),
        content_type: entry.content_type.clone(),
        version: entry.version,
    }))
}

pub(super) async fn memory_delete(
    store: &MemoryStore,
    scope: &MemoryScope,
    key: &str,
    if_version: Option<u64>,
    now_ms: u64,
) -> StoreResult<bool> {
    let cap = store.cap();
    {
        let mut inner = store.lock();
        let scope_data = inner.scopes.entry(scope.clone()).or_default();
        let actual = scope_data.version(key);
        if let Some(expected) = if_version
            && expected != actual
        {
            return Err(StoreError::VersionMismatch {
                key: key.to_owned(),
                expected,
                actual,
            });
        }
        let Some(entry) = scope_data.entries.remove(key) else {
            return Ok(false);
        };
        scope_data.log(
            MemoryChange {
                revision: 0,
                key: key.to_owned(),
                kind: MemoryChangeKind::Delete,
                version: entry.version,
                value: None,
                content_type: entry.content_type,
                at_ms: now_ms,
            },
            cap,
        );
    }
    store.ring_all(vec![Doorbell::Memory(scope.clone())]);
    Ok(true)
}

pub(super) async fn memory_list(
    store: &MemoryStore,
    scope: &MemoryScope,
    prefix: &str,
    after_key: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<MemoryKeyInfo>> {
    let mut inner = store.lock();
    let Some(scope_data) = inner.scopes.get_mut(scope) else {
        return Ok(Vec::new());
    };
    let now = Instant::now();
    scope_data
        .entries
        .retain(|_, entry| entry.expires.is_none_or(|at| at > now));
    let listed = scope_data
        .entries
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .filter(|(key, _)| after_key.is_none_or(|after| key.as_str() > after))
        .take(limit as usize)
        .map(|(key, entry)| MemoryKeyInfo {
            key: key.clone(),
            version: entry.version,
            size: entry.value.len() as u64,
            content_type: entry.content_type.clone(),
            expires_at_ms: entry.expires_at_ms,
        })
        .collect();
    Ok(listed)
}

pub(super) async fn memory_incr(
    store: &MemoryStore,
    scope: &MemoryScope,
    key: &str,
    delta: i64,
    now_ms: u64,
) -> StoreResult<(i64, PutOutcome)> {
    let cap = store.cap();
    let (new_value, written) = {
        let mut inner = store.lock();
        let scope_data = inner.scopes.entry(scope.clone()).or_default();
        let not_an_integer = || StoreError::NotAnInteger {
            key: key.to_owned(),
        };
        let (current, version, content_type, expires, expires_at_ms) = match scope_data.live(key) {
            None => (0, 0, TEXT_CONTENT_TYPE.to_owned(), None, 0),
            Some(entry) => {
                let current: i64 = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(not_an_integer)?;
                (
                    current,
                    entry.version,
                    entry.content_type.clone(),
                    entry.expires,
                    entry.expires_at_ms,
                )
            }
        };
        let new_value = current.checked_add(delta).ok_or_else(not_an_integer)?;
        let text = new_value.to_string().into_bytes();
        scope_data.entries.insert(
            key.to_owned(),
            Entry {
                value: text.clone(),
                content_type: content_type.clone(),
                version: version + 1,
                expires,
                expires_at_ms,
            },
        );
        scope_data.log(
            MemoryChange {
                revision: 0,
                key: key.to_owned(),
                kind: MemoryChangeKind::Put,
                version: version + 1,
                value: Some(text),
                content_type,
                at_ms: now_ms,
            },
            cap,
        );
        (new_value, inner.wake(scope, key, version + 1, None))
    };
    store.ring_all(written.touched.into_iter().map(Doorbell::Batch).collect());
    store.ring_all(vec![Doorbell::Memory(scope.clone())]);
    Ok((
        new_value,
        PutOutcome {
            version: written.version,
            unblocked: written.unblocked,
        },
    ))
}

pub(super) async fn memory_changes(
    store: &MemoryStore,
    scope: &MemoryScope,
    prefix: &str,
    after_revision: u64,
    max: u32,
) -> StoreResult<Vec<MemoryChange>> {
    let inner = store.lock();
    let Some(scope_data) = inner.scopes.get(scope) else {
        return Ok(Vec::new());
    };
    let mut newer = scope_data
        .changes
        .iter()
        .filter(|change| change.revision > after_revision)
        .peekable();
    if let Some(first) = newer.peek()
        && first.revision != after_revision + 1
    {
        return Err(StoreError::ChangesTrimmed {
            scope: scope.to_string(),
            after: after_revision,
            oldest: first.revision,
        });
    }
    Ok(newer
        .filter(|change| change.key.starts_with(prefix))
        .take(max as usize)
        .cloned()
        .collect())
}

pub(super) async fn memory_revision(store: &MemoryStore, scope: &MemoryScope) -> StoreResult<u64> {
    Ok(store
        .lock()
        .scopes
        .get(scope)
        .map_or(0, |scope_data| scope_data.revision))
}
