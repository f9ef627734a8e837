//! Codecs: how the store's types are written into Redis fields and script arguments, and read back.

use super::*;

/// The writes of `create_batch`'s first step for `chunk` (ops `first..`):
/// static info, state, pending counts (memory waits included), wait
/// deadlines, wait info and the ready queues of ops that wait for nothing.
pub(super) fn write_ops_pipe(batch: &NewBatch, first: u32, chunk: &[NewOp]) -> redis::Pipeline {
    let mut info = redis::cmd("HSET");
    info.arg(keys::info(&batch.id));
    let mut state = redis::cmd("HSET");
    state.arg(keys::state(&batch.id));
    let mut pending = redis::cmd("HSET");
    pending.arg(keys::pending(&batch.id));
    let mut any_pending = false;
    let mut deadlines = redis::cmd("ZADD");
    deadlines.arg(keys::deadlines(&batch.id));
    let mut wait_info = redis::cmd("HSET");
    wait_info.arg(keys::wait_info(&batch.id));
    let mut any_deadline = false;
    let mut any_wait_info = false;
    let mut ready: [Vec<u32>; PRIORITY_LEVELS as usize] = Default::default();
    for (offset, op) in chunk.iter().enumerate() {
        let index = first + offset as u32;
        let count = pending_count(op);
        info.arg(index).arg(packed_info(op, &op.dependents));
        if count == 0 {
            state.arg(index).arg(OpState::Ready.code());
            ready[usize::from(op.priority.min(PRIORITY_LEVELS - 1))].push(index);
        } else {
            state.arg(index).arg(OpState::Waiting.code());
            pending.arg(index).arg(count);
            any_pending = true;
        }
        if let Some(json) = wait_info_json(op, batch.created_ms) {
            if op.wait_deadline_ms > 0 {
                deadlines.arg(op.wait_deadline_ms).arg(index);
                any_deadline = true;
            }
            wait_info.arg(index).arg(json);
            any_wait_info = true;
        }
    }
    let mut pipe = redis::pipe();
    pipe.add_command(info).ignore();
    pipe.add_command(state).ignore();
    if any_pending {
        pipe.add_command(pending).ignore();
    }
    if any_deadline {
        pipe.add_command(deadlines).ignore();
    }
    if any_wait_info {
        pipe.add_command(wait_info).ignore();
    }
    for (priority, indices) in ready.iter().enumerate() {
        if !indices.is_empty() {
            pipe.cmd("RPUSH")
                .arg(keys::ready(&batch.id, priority as u8))
                .arg(indices)
                .ignore();
        }
    }
    pipe
}

/// How a batch's meta records its memory scope: `b` (its own) or `m:<namespace>`.
pub(super) fn memory_code(scope: &MemoryScope) -> String {
    match scope {
        MemoryScope::Batch(_) => "b".to_owned(),
        MemoryScope::Shared(namespace) => format!("m:{namespace}"),
    }
}

pub(super) fn scope_from_code(batch: &BatchId, code: &str) -> MemoryScope {
    match code.strip_prefix("m:") {
        Some(namespace) => MemoryScope::Shared(namespace.to_owned()),
        None => MemoryScope::Batch(batch.clone()),
    }
}

/// Adds to `pipe` the writes of a new batch's declared writers (see
/// `keys.rs`): `writes`, `writers_left`, `writer_ops` and meta `writers`.
pub(super) fn add_writer_commands(
    pipe: &mut redis::Pipeline,
    batch: &BatchId,
    declared: &DeclaredWriters,
) {
    if declared.by_op.is_empty() {
        return;
    }
    for chunk in declared.by_op.chunks(WRITE_CHUNK) {
        let mut writes = redis::cmd("HSET");
        writes.arg(keys::writes(batch));
        for (index, keys) in chunk {
            writes.arg(*index).arg(keys.join(","));
        }
        pipe.add_command(writes).ignore();
    }
    let by_key: Vec<(&String, &Vec<u32>)> = declared.by_key.iter().collect();
    for chunk in by_key.chunks(WRITE_CHUNK) {
        let mut left = redis::cmd("HSET");
        left.arg(keys::writers_left(batch));
        let mut ops = redis::cmd("HSET");
        ops.arg(keys::writer_ops(batch));
        for (key, writers) in chunk {
            left.arg(*key).arg(writers.len());
            let joined: Vec<String> = writers.iter().map(u32::to_string).collect();
            ops.arg(*key).arg(joined.join(","));
        }
        pipe.add_command(left).ignore();
        pipe.add_command(ops).ignore();
    }
    pipe.hset(keys::meta(batch), "writers", "1").ignore();
}

/// The `waitinfo` JSON of an op with memory waits (what `expire_waits`
/// names and `op_waits` reports); `None` when it waits for no key.
pub(super) fn wait_info_json(op: &NewOp, since_ms: u64) -> Option<String> {
    let (all, any) = wait_keys(op);
    if all.is_empty() && any.is_empty() {
        return None;
    }
    Some(serde_json::json!({ "s": since_ms.to_string(), "a": all, "y": any }).to_string())
}

/// Parses `<batch>|<op>|<key>|<mode>`, a member of the waiter set of `key`.
pub(super) fn parse_waiter(member: &str, key: &str) -> Option<(BatchId, u32, &'static str)> {
    let (head, mode) = if let Some(head) = member.strip_suffix("|all") {
        (head, "all")
    } else {
        (member.strip_suffix("|any")?, "any")
    };
    let head = head.strip_suffix(key)?.strip_suffix('|')?;
    let (batch, index) = head.rsplit_once('|')?;
    Some((BatchId::new(batch), index.parse().ok()?, mode))
}

pub(super) fn value_i64(value: &Value) -> StoreResult<i64> {
    redis::from_redis_value::<i64>(value.clone()).map_err(corrupt)
}

/// What one memory write did.
pub(super) struct Written {
    pub(super) version: u64,
    /// Countdowns decremented, across batches.
    pub(super) unblocked: u32,
    /// Ops that became ready, per batch.
    pub(super) became_ready: Vec<(BatchId, u32)>,
}

pub(super) fn on_failure_code(on_failure: OnFailure) -> &'static str {
    match on_failure {
        OnFailure::Continue => "continue",
        OnFailure::FailFast => "fail_fast",
    }
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// How the `owner` key and the fenced scripts spell a fence.
pub(super) fn packed_fence(fence: &Fence) -> String {
    format!("{}|{}", fence.coordinator, fence.token)
}

/// Reads an `owner` value `<coordinator>|<token>` (the coordinator id may
/// contain '|': the token is after the last one).
pub(super) fn parse_fence(value: &str) -> StoreResult<Fence> {
    value
        .rsplit_once('|')
        .and_then(|(coordinator, token)| {
            Some(Fence {
                coordinator: coordinator.to_owned(),
                token: token.parse().ok()?,
            })
        })
        .ok_or_else(|| corrupt(format_args!("owner hold `{value}`")))
}

/// A fenced script's error: its `NOTOWNER <holder>` reply becomes
/// [`StoreError::NotOwner`]; anything else stays a Redis error.
pub(super) fn fenced_error(batch: &BatchId, error: redis::RedisError) -> StoreError {
    if error.code() != Some(NOT_OWNER_REPLY) {
        return StoreError::Redis(error);
    }
    let holder = error
        .detail()
        .map(str::trim)
        .filter(|holder| !holder.is_empty())
        .map(str::to_owned);
    StoreError::NotOwner {
        batch: batch.clone(),
        holder,
    }
}

/// The JSON value of a coordinator's field in [`keys::WORKERS`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct PublishedWorkers {
    pub(super) until_ms: u64,
    #[serde(default)]
    pub(super) workers: Vec<WorkerEntry>,
}

pub(super) fn number<T: std::str::FromStr + Default>(
    fields: &HashMap<String, String>,
    name: &str,
) -> StoreResult<T> {
    match fields.get(name).map(String::as_str) {
        None | Some("") => Ok(T::default()),
        Some(text) => text
            .parse()
            .map_err(|_| corrupt(format_args!("meta field `{name}` is `{text}`"))),
    }
}

/// `None` for a missing batch or one still being written (`creating`).
pub(super) fn parse_meta(
    batch: &BatchId,
    fields: &HashMap<String, String>,
) -> StoreResult<Option<BatchMeta>> {
    let Some(state) = fields.get("state") else {
        return Ok(None);
    };
    if state == "creating" {
        return Ok(None);
    }
    let state = BatchState::from_code(state)
        .ok_or_else(|| corrupt(format_args!("batch {batch} has state `{state}`")))?;
    let finished_ms = match fields.get("finished_ms") {
        Some(text) if !text.is_empty() => Some(number(fields, "finished_ms")?),
        _ => None,
    };
    Ok(Some(BatchMeta {
        id: batch.clone(),
        name: fields.get("name").cloned().unwrap_or_default(),
        state,
        created_ms: number(fields, "created_ms")?,
        finished_ms,
        max_parallel: number(fields, "max_parallel")?,
        on_failure: match fields.get("on_failure").map(String::as_str) {
            Some("fail_fast") => OnFailure::FailFast,
            _ => OnFailure::Continue,
        },
        total: number(fields, "total")?,
        succeeded: number(fields, "succeeded")?,
        failed: number(fields, "failed")?,
        skipped: number(fields, "skipped")?,
        cancelled: number(fields, "cancelled")?,
        running: number(fields, "running")?,
        error: fields.get("error").cloned().unwrap_or_default(),
        tenant: fields.get("tenant").cloned().unwrap_or_default(),
        sequential_ms: number(fields, "duration_sum_ms")?,
    }))
}

/// The JSON kept per final op in the `result` hash (written by the scripts
/// with cjson; times are strings so no precision is lost in Lua's doubles).
#[derive(serde::Deserialize, Default)]
pub(super) struct ResultJson {
    #[serde(default)]
    pub(super) w: String,
    #[serde(default)]
    pub(super) s: String,
    #[serde(default)]
    pub(super) d: String,
    #[serde(default)]
    pub(super) o: String,
    #[serde(default)]
    pub(super) e: String,
    #[serde(default)]
    pub(super) j: String,
    /// What `e` names, when a script wrote it (see [`CauseJson`]).
    #[serde(default)]
    pub(super) c: Option<serde_json::Value>,
}

/// A [`Cause`] as the scripts keep it (`cause_dependency`,
/// `cause_fail_fast` and `hopeless_message` in `lua/common.lua`):
/// `{"d":7,"s":"F"}`, `{"f":7}`, `{"k":"key","w":[[3,"F"]],"m":0}`.
#[derive(serde::Deserialize)]
pub(super) struct CauseJson {
    #[serde(default)]
    pub(super) d: Option<u32>,
    #[serde(default)]
    pub(super) s: Option<String>,
    #[serde(default)]
    pub(super) f: Option<u32>,
    #[serde(default)]
    pub(super) k: Option<String>,
    #[serde(default)]
    pub(super) w: Vec<(u32, String)>,
    #[serde(default)]
    pub(super) m: u32,
}

impl CauseJson {
    /// `None` for a cause this version cannot read: the message is then
    /// shown as it is, as for records kept before causes were.
    pub(super) fn into_cause(self) -> Option<Cause> {
        if let Some(index) = self.d {
            let state = OpState::from_code(self.s.as_deref()?)?;
            return Some(Cause::Dependency { index, state });
        }
        if let Some(index) = self.f {
            return Some(Cause::FailFast { index });
        }
        let key = self.k?;
        let writers = self
            .w
            .into_iter()
            .map(|(index, code)| Some((index, OpState::from_code(&code)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Cause::NeverWritten {
            key,
            writers,
            more: self.m,
        })
    }

    pub(super) fn parse(json: &str) -> Option<Cause> {
        serde_json::from_str::<CauseJson>(json)
            .ok()
            .and_then(CauseJson::into_cause)
    }

    pub(super) fn from_value(value: serde_json::Value) -> Option<Cause> {
        serde_json::from_value::<CauseJson>(value)
            .ok()
            .and_then(CauseJson::into_cause)
    }
}

pub(super) fn parse_ms(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// Reads an event: one field `e` packing now, kind, op index, attempt,
/// worker, batch state and message, separated by `\x1f` (see `event` in
/// `lua/common.lua`); entries written before that format have one field
/// each (`t`, `k`, `i`, `a`, `w`, `b`, `m`).
pub(super) fn parse_event(id: &str, fields: &HashMap<String, String>) -> StoreResult<Event> {
    let mut parts: [&str; 7] = [""; 7];
    match fields.get("e") {
        Some(packed) => {
            for (slot, part) in parts.iter_mut().zip(packed.splitn(7, '\x1f')) {
                *slot = part;
            }
        }
        None => {
            for (slot, name) in parts.iter_mut().zip(["t", "k", "i", "a", "w", "b", "m"]) {
                *slot = fields.get(name).map_or("", String::as_str);
            }
        }
    }
    let [at, kind_code, index, attempt, worker, state, message] = parts;
    let seq = id
        .split_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .ok_or_else(|| corrupt(format_args!("event id `{id}`")))?;
    let kind = EventKind::from_code(kind_code)
        .ok_or_else(|| corrupt(format_args!("event kind `{kind_code}`")))?;
    let op_index = match index {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| corrupt(format_args!("event op index `{text}`")))?,
        ),
    };
    let batch_state = match state {
        "" => None,
        code => Some(
            BatchState::from_code(code)
                .ok_or_else(|| corrupt(format_args!("event batch state `{code}`")))?,
        ),
    };
    Ok(Event {
        seq,
        at_ms: parse_ms(at),
        kind,
        op_index,
        attempt: attempt.parse().unwrap_or(0),
        worker: worker.to_owned(),
        message: message.to_owned(),
        cause: fields.get("c").and_then(|json| CauseJson::parse(json)),
        batch_state,
    })
}

/// Reads a flat `[index, attempt, …]` array.
pub(super) fn claimed_pairs(values: &[i64]) -> StoreResult<Vec<Claimed>> {
    if !values.len().is_multiple_of(2) {
        return Err(corrupt("odd index/attempt list from a script"));
    }
    Ok(values
        .chunks_exact(2)
        .map(|pair| Claimed {
            index: pair[0] as u32,
            attempt: pair[1] as u32,
        })
        .collect())
}

/// `priority|run_if_always|max_attempts|retry|d1,d2,…` (see `op_info` in
/// `lua/common.lua`).
pub(super) fn packed_info(op: &NewOp, dependents: &[u32]) -> String {
    let dependents: Vec<String> = dependents.iter().map(u32::to_string).collect();
    format!(
        "{}|{}|{}|{}|{}",
        op.priority.min(PRIORITY_LEVELS - 1),
        u8::from(op.run_if_always),
        op.max_attempts.max(1),
        packed_retry(&op.retry),
        dependents.join(",")
    )
}

/// `<on_failure><on_timeout><on_lost_worker>,<initial>,<max>,<multiplier>,<jitter>`.
pub(super) fn packed_retry(policy: &RetryPolicy) -> String {
    format!(
        "{}{}{},{},{},{},{}",
        u8::from(policy.on_failure),
        u8::from(policy.on_timeout),
        u8::from(policy.on_lost_worker),
        policy.backoff_initial_ms,
        policy.backoff_max_ms,
        sane_multiplier(policy.backoff_multiplier),
        u8::from(policy.backoff_jitter)
    )
}

/// How `complete.lua` spells a completion's outcome.
pub(super) fn outcome_code(completion: &Completion) -> &'static str {
    if completion.ok {
        return "ok";
    }
    match completion.failure {
        FailureKind::Error => "error",
        FailureKind::Timeout => "timeout",
        FailureKind::LostWorker => "lost",
        FailureKind::Permanent => "permanent",
    }
}

/// A fresh seed for the scripts' `math.random` (backoff jitter): Redis
/// would otherwise start every script from the same seed.
pub(super) fn random_seed() -> u32 {
    // The low bits of a v7 uuid are random.
    (uuid::Uuid::now_v7().as_u128() & 0x7fff_ffff) as u32
}

/// A `next_retry_at_ms` as a script returns it ('' for none).
pub(super) fn parse_next_retry(text: &str) -> StoreResult<Option<u64>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| corrupt(format_args!("next retry at `{text}`")))
}

/// The invocation of a batch script with the common header (ARGV 1..3).
pub(super) fn batch_invocation<'a>(
    script: &'a Script,
    batch: &BatchId,
    now_ms: u64,
) -> redis::ScriptInvocation<'a> {
    let mut invocation = script.key(keys::batch_prefix(batch));
    invocation
        .arg(keys::DOORBELL_CHANNEL)
        .arg(batch.as_str())
        .arg(now_ms);
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_members_parse_with_bars_in_the_key() {
        assert_eq!(
            parse_waiter("0193|12|a|b|any", "a|b"),
            Some((BatchId::new("0193"), 12, "any"))
        );
        assert_eq!(
            parse_waiter("0193|3|k|all", "k"),
            Some((BatchId::new("0193"), 3, "all"))
        );
        assert_eq!(parse_waiter("0193|x|k|all", "k"), None);
        assert_eq!(parse_waiter("0193|3|k|some", "k"), None);
    }
}
