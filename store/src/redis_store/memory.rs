//! Memory scopes: the memory verbs, and the writes and waits they share with batch verbs.

use super::*;

impl RedisStore {
    /// An invocation of a memory script on `scope` with the header of
    /// `lua/memory.lua` (ARGV 1..5) filled in.
    pub(super) fn memory_invocation<'a>(
        &self,
        script: &'a Script,
        scope: &MemoryScope,
        now_ms: u64,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(keys::scope_prefix(scope));
        invocation
            .arg(keys::DOORBELL_CHANNEL)
            .arg(match scope {
                MemoryScope::Batch(batch) => batch.as_str(),
                MemoryScope::Shared(_) => "",
            })
            .arg(now_ms)
            .arg(keys::memory_bell(scope))
            .arg(self.change_log_cap());
        invocation
    }

    /// Registers memory waits of `batch`'s ops, exactly as create_batch and
    /// add_ops both need: in the batch's slot for its own memory; for a
    /// shared namespace, first in the namespace's slot, then the keys found
    /// present are applied in the batch's slot (`arrive.lua`). Returns how
    /// many ops became ready, and the batch's finished state code when a
    /// key nobody will write any more skipped the last ops ('' else; see
    /// `register_waits.lua`).
    pub(super) async fn register_waits(
        &self,
        batch: &BatchId,
        scope: &MemoryScope,
        triples: &[(u32, String, &'static str)],
        now_ms: u64,
    ) -> StoreResult<(u32, String)> {
        let mut connection = self.connection();
        let mut became_ready = 0;
        let mut finished = String::new();
        match scope {
            MemoryScope::Batch(_) => {
                for chunk in triples.chunks(WRITE_CHUNK) {
                    let mut invocation = self
                        .shared
                        .scripts
                        .register_waits
                        .key(keys::batch_prefix(batch));
                    invocation
                        .arg(keys::DOORBELL_CHANNEL)
                        .arg(batch.as_str())
                        .arg(now_ms);
                    for (index, key, mode) in chunk {
                        invocation.arg(*index).arg(key).arg(*mode);
                    }
                    let (ready, ended): (u32, String) =
                        invocation.invoke_async(&mut connection).await?;
                    became_ready += ready;
                    if !ended.is_empty() {
                        finished = ended;
                    }
                }
            }
            MemoryScope::Shared(_) => {
                let mut present: Vec<(u32, String, &'static str)> = Vec::new();
                for chunk in triples.chunks(WRITE_CHUNK) {
                    let mut invocation = self
                        .shared
                        .scripts
                        .register_shared
                        .key(keys::scope_prefix(scope));
                    invocation
                        .arg(keys::DOORBELL_CHANNEL)
                        .arg(batch.as_str())
                        .arg(now_ms);
                    for (index, key, mode) in chunk {
                        invocation.arg(*index).arg(key).arg(*mode);
                    }
                    let found: Vec<String> = invocation.invoke_async(&mut connection).await?;
                    for triple in found.chunks_exact(3) {
                        let index = triple[0]
                            .parse()
                            .map_err(|_| corrupt(format_args!("waiter index `{}`", triple[0])))?;
                        let mode = if triple[2] == "any" { "any" } else { "all" };
                        present.push((index, triple[1].clone(), mode));
                    }
                }
                let (_, ready) = self.arrive(batch, &present, now_ms).await?;
                became_ready += ready;
            }
        }
        Ok((became_ready, finished))
    }

    /// Marks keys arrived for ops of `batch` (idempotent). Returns
    /// (countdowns decremented, ops that became ready).
    pub(super) async fn arrive(
        &self,
        batch: &BatchId,
        triples: &[(u32, String, &'static str)],
        now_ms: u64,
    ) -> StoreResult<(u32, u32)> {
        let mut connection = self.connection();
        let (mut unblocked, mut became_ready) = (0, 0);
        for chunk in triples.chunks(WRITE_CHUNK) {
            let mut invocation = self.shared.scripts.arrive.key(keys::batch_prefix(batch));
            invocation
                .arg(keys::DOORBELL_CHANNEL)
                .arg(batch.as_str())
                .arg(now_ms);
            for (index, key, mode) in chunk {
                invocation.arg(*index).arg(key).arg(*mode);
            }
            let (decremented, ready): (u32, u32) = invocation.invoke_async(&mut connection).await?;
            unblocked += decremented;
            became_ready += ready;
        }
        Ok((unblocked, became_ready))
    }

    /// Writes a memory key (the code path of `memory_put`, `memory_incr`'s
    /// waiters and a shared `store_as`): stages chunks of a large value,
    /// runs the write script in the scope's slot, then applies the popped
    /// waiters of a shared scope batch by batch.
    ///
    /// `guard`: the marker of this exact write ([`keys::applied_guard`]):
    /// when it exists the write was done already and nothing is written
    /// (`Written::version` is the version written then).
    pub(super) async fn write_memory(
        &self,
        scope: &MemoryScope,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        guard: Option<&str>,
        now_ms: u64,
    ) -> StoreResult<Written> {
        let mut connection = self.connection();
        let mut staged: Vec<String> = Vec::new();
        let mut invocation = self.memory_invocation(&self.shared.scripts.memory_put, scope, now_ms);
        invocation
            .arg(key)
            .arg(&options.content_type)
            .arg(
                options
                    .ttl_ms
                    .map(|ttl| ttl.to_string())
                    .unwrap_or_default(),
            )
            .arg(options.ttl_ms.map_or(0, |ttl| now_ms.saturating_add(ttl)))
            .arg(
                options
                    .if_version
                    .map(|version| version.to_string())
                    .unwrap_or_default(),
            );
        if value.len() > MEMORY_CHUNK_BYTES {
            let generation = uuid::Uuid::now_v7().simple().to_string();
            for (number, chunk) in value.chunks(MEMORY_CHUNK_BYTES).enumerate() {
                let chunk_key = keys::chunk(scope, &generation, number as u64);
                let _: () = redis::cmd("SET")
                    .arg(&chunk_key)
                    .arg(chunk)
                    .arg("PX")
                    .arg(STAGED_CHUNK_TTL_MS)
                    .query_async(&mut connection)
                    .await?;
                staged.push(chunk_key);
            }
            invocation
                .arg("c")
                .arg(&generation)
                .arg(staged.len())
                .arg(value.len());
        } else {
            invocation.arg("i").arg(value).arg("").arg("");
        }
        invocation
            .arg(guard.unwrap_or(""))
            .arg(APPLIED_GUARD_TTL_MS);
        let reply: Vec<Value> = invocation.invoke_async(&mut connection).await?;
        let status = reply.first().map(value_i64).transpose()?.unwrap_or(-2);
        if status == -3 {
            if !staged.is_empty() {
                let _: i64 = connection.del(&staged).await?;
            }
            let version = reply.get(1).map(value_i64).transpose()?.unwrap_or(0);
            return Ok(Written {
                version: version as u64,
                unblocked: 0,
                became_ready: Vec::new(),
            });
        }
        if status < 0 {
            if !staged.is_empty() {
                let _: i64 = connection.del(&staged).await?;
            }
            if status == -1 {
                let actual = reply.get(1).map(value_i64).transpose()?.unwrap_or(0);
                return Err(StoreError::VersionMismatch {
                    key: key.to_owned(),
                    expected: options.if_version.unwrap_or(0),
                    actual: actual as u64,
                });
            }
            return Err(corrupt(format_args!(
                "staged chunks of memory key `{key}` expired before the write"
            )));
        }
        self.after_write(scope, key, status as u64, &reply[1..], now_ms)
            .await
    }

    /// The common tail of a write script's reply `[unblocked, became_ready,
    /// {members}]`: applies a shared scope's waiters in their batches.
    pub(super) async fn after_write(
        &self,
        scope: &MemoryScope,
        key: &str,
        version: u64,
        tail: &[Value],
        now_ms: u64,
    ) -> StoreResult<Written> {
        let field = |position: usize| tail.get(position).map(value_i64).transpose();
        let unblocked = field(0)?.unwrap_or(0) as u32;
        let became_ready = field(1)?.unwrap_or(0) as u32;
        let members: Vec<String> = match tail.get(2) {
            Some(value) => redis::from_redis_value(value.clone()).map_err(corrupt)?,
            None => Vec::new(),
        };
        let mut written = Written {
            version,
            unblocked,
            became_ready: Vec::new(),
        };
        if let MemoryScope::Batch(batch) = scope {
            written.became_ready.push((batch.clone(), became_ready));
        }
        let mut by_batch: BTreeMap<BatchId, Vec<(u32, String, &'static str)>> = BTreeMap::new();
        for member in &members {
            match parse_waiter(member, key) {
                Some((batch, index, mode)) => {
                    by_batch
                        .entry(batch)
                        .or_default()
                        .push((index, key.to_owned(), mode))
                }
                None => tracing::warn!(member, "unreadable waiter"),
            }
        }
        for (batch, mut triples) in by_batch {
            triples.sort();
            let (decremented, ready) = self.arrive(&batch, &triples, now_ms).await?;
            written.unblocked += decremented;
            written.became_ready.push((batch, ready));
        }
        Ok(written)
    }
}

pub(super) async fn memory_put(
    store: &RedisStore,
    scope: &MemoryScope,
    key: &str,
    value: &[u8],
    options: &PutOptions,
    now_ms: u64,
) -> StoreResult<PutOutcome> {
    let written = store
        .write_memory(scope, key, value, options, None, now_ms)
        .await?;
    Ok(PutOutcome {
        version: written.version,
        unblocked: written.unblocked,
    })
}

pub(super) async fn memory_get(
    store: &RedisStore,
    scope: &MemoryScope,
    key: &str,
) -> StoreResult<Option<MemoryValue>> {
    let mut connection = store.connection();
    for _ in 0..CHUNKED_READ_ATTEMPTS {
        let fields: HashMap<String, Vec<u8>> = connection.hgetall(keys::memory(scope, key)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default()
        };
        let version: u64 = text("ver").parse().unwrap_or(0);
        let content_type = text("ct");
        if let Some(value) = fields.get("v") {
            return Ok(Some(MemoryValue {
                value: value.clone(),
                content_type,
                version,
            }));
        }
        let generation = text("gen");
        let count: u64 = text("n").parse().unwrap_or(0);
        let mut pipe = redis::pipe();
        for number in 0..count {
            pipe.get(keys::chunk(scope, &generation, number));
        }
        let chunks: Vec<Option<Vec<u8>>> = pipe.query_async(&mut connection).await?;
        // A chunk gone means the value was overwritten under us: read again.
        if chunks.iter().all(Option::is_some) {
            let value = chunks.into_iter().flatten().flatten().collect();
            return Ok(Some(MemoryValue {
                value,
                content_type,
                version,
            }));
        }
    }
    Err(corrupt(format_args!(
        "memory key `{key}` of {scope}: chunks kept vanishing while reading"
    )))
}

pub(super) async fn memory_delete(
    store: &RedisStore,
    scope: &MemoryScope,
    key: &str,
    if_version: Option<u64>,
    now_ms: u64,
) -> StoreResult<bool> {
    let mut invocation =
        store.memory_invocation(&store.shared.scripts.memory_delete, scope, now_ms);
    invocation.arg(key).arg(
        if_version
            .map(|version| version.to_string())
            .unwrap_or_default(),
    );
    let reply: Vec<i64> = invocation.invoke_async(&mut store.connection()).await?;
    match reply.as_slice() {
        [-1, actual] => Err(StoreError::VersionMismatch {
            key: key.to_owned(),
            expected: if_version.unwrap_or(0),
            actual: *actual as u64,
        }),
        [deleted] => Ok(*deleted == 1),
        _ => Err(corrupt("memory_delete reply")),
    }
}

pub(super) async fn memory_list(
    store: &RedisStore,
    scope: &MemoryScope,
    prefix: &str,
    after_key: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<MemoryKeyInfo>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // ZRANGEBYLEX bounds: past `after_key` when it is at or beyond the
    // prefix, else from the prefix; up to the prefix followed by 0xff
    // (no UTF-8 key has that byte).
    let low: Vec<u8> = match after_key {
        Some(after) if after.as_bytes() >= prefix.as_bytes() => {
            [b"(".as_slice(), after.as_bytes()].concat()
        }
        _ => [b"[".as_slice(), prefix.as_bytes()].concat(),
    };
    let high: Vec<u8> = if prefix.is_empty() {
        b"+".to_vec()
    } else {
        [b"[".as_slice(), prefix.as_bytes(), &[0xff]].concat()
    };
    let flat: Vec<String> = store
        .shared
        .scripts
        .memory_list
        .key(keys::scope_prefix(scope))
        .arg(keys::DOORBELL_CHANNEL)
        .arg("")
        .arg(0)
        .arg(low)
        .arg(high)
        .arg(prefix)
        .arg(limit)
        .invoke_async(&mut store.connection())
        .await?;
    if !flat.len().is_multiple_of(5) {
        return Err(corrupt("memory_list reply"));
    }
    Ok(flat
        .chunks_exact(5)
        .map(|fields| MemoryKeyInfo {
            key: fields[0].clone(),
            version: fields[1].parse().unwrap_or(0),
            size: fields[2].parse().unwrap_or(0),
            content_type: fields[3].clone(),
            expires_at_ms: fields[4].parse().unwrap_or(0),
        })
        .collect())
}

pub(super) async fn memory_incr(
    store: &RedisStore,
    scope: &MemoryScope,
    key: &str,
    delta: i64,
    now_ms: u64,
) -> StoreResult<(i64, PutOutcome)> {
    let mut invocation = store.memory_invocation(&store.shared.scripts.memory_incr, scope, now_ms);
    invocation.arg(key).arg(delta);
    let reply: Vec<Value> = invocation.invoke_async(&mut store.connection()).await?;
    if let Some(Value::Int(-3)) = reply.first() {
        return Err(StoreError::NotAnInteger {
            key: key.to_owned(),
        });
    }
    let (Some(value), Some(version)) = (reply.first(), reply.get(1)) else {
        return Err(corrupt("memory_incr reply"));
    };
    let text: String = redis::from_redis_value(value.clone()).map_err(corrupt)?;
    let new_value: i64 = text
        .parse()
        .map_err(|_| corrupt(format_args!("memory_incr value `{text}`")))?;
    let version = value_i64(version)? as u64;
    let written = store
        .after_write(scope, key, version, &reply[2..], now_ms)
        .await?;
    Ok((
        new_value,
        PutOutcome {
            version,
            unblocked: written.unblocked,
        },
    ))
}

pub(super) async fn memory_changes(
    store: &RedisStore,
    scope: &MemoryScope,
    prefix: &str,
    after_revision: u64,
    max: u32,
) -> StoreResult<Vec<MemoryChange>> {
    let mut connection = store.connection();
    let mut changes = Vec::new();
    let mut cursor = after_revision;
    let mut first_page = true;
    while changes.len() < max as usize {
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(keys::changes(scope))
            .arg(format!("(0-{cursor}"))
            .arg("+")
            .arg("COUNT")
            .arg(CHANGES_PAGE)
            .query_async(&mut connection)
            .await?;
        let page_len = entries.len();
        for (id, fields) in entries {
            let revision: u64 = id
                .split_once('-')
                .and_then(|(_, revision)| revision.parse().ok())
                .ok_or_else(|| corrupt(format_args!("change id `{id}`")))?;
            // Revisions have no gaps, so the first one after the resume
            // point must be the next: anything else was trimmed.
            if first_page && revision != after_revision + 1 {
                return Err(StoreError::ChangesTrimmed {
                    scope: scope.to_string(),
                    after: after_revision,
                    oldest: revision,
                });
            }
            first_page = false;
            cursor = revision;
            let text = |name: &str| {
                fields
                    .get(name)
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_default()
            };
            let key = text("k");
            if !key.starts_with(prefix) {
                continue;
            }
            changes.push(MemoryChange {
                revision,
                kind: if text("o") == "d" {
                    MemoryChangeKind::Delete
                } else {
                    MemoryChangeKind::Put
                },
                version: text("n").parse().unwrap_or(0),
                value: fields.get("v").cloned(),
                content_type: text("c"),
                at_ms: parse_ms(&text("t")),
                key,
            });
            if changes.len() >= max as usize {
                break;
            }
        }
        if page_len < CHANGES_PAGE {
            break;
        }
    }
    Ok(changes)
}

pub(super) async fn memory_revision(store: &RedisStore, scope: &MemoryScope) -> StoreResult<u64> {
    let revision: Option<u64> = store.connection().get(keys::revision(scope)).await?;
    Ok(revision.unwrap_or(0))
}
