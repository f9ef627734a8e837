//! The batch state machine: how a batch's ops count down, end, retry, skip and finish.

use super::*;

impl BatchData {
    /// Its meta as read: the counters and the sequential time, both kept
    /// as ops end (as the Redis store keeps them), so a read costs nothing
    /// per op: `volley run` and the batch list read it often.
    pub(super) fn meta_now(&self) -> BatchMeta {
        self.meta.clone()
    }

    /// The hold still live at `now_ms`, if any.
    pub(super) fn live_owner(&self, now_ms: u64) -> Option<&Fence> {
        self.owner
            .as_ref()
            .filter(|(_, until_ms)| *until_ms > now_ms)
            .map(|(fence, _)| fence)
    }

    /// `NotOwner` unless `fence` is the live hold at `now_ms`.
    pub(super) fn check_fence(&self, fence: &Fence, now_ms: u64) -> StoreResult<()> {
        match self.live_owner(now_ms) {
            Some(live) if live == fence => Ok(()),
            live => Err(StoreError::NotOwner {
                batch: self.meta.id.clone(),
                holder: live.map(|live| live.coordinator.clone()),
            }),
        }
    }

    /// When attempt `attempt` of op `index` started: its `OpStarted` event
    /// among the latest [`STARTED_LOOKBACK`] events (as `expire_leases.lua`
    /// looks).
    pub(super) fn attempt_started_ms(&self, index: u32, attempt: u32) -> Option<u64> {
        self.events
            .iter()
            .rev()
            .take(STARTED_LOOKBACK)
            .find(|event| {
                event.kind == EventKind::OpStarted
                    && event.op_index == index
                    && event.attempt == attempt
            })
            .map(|event| event.at_ms)
    }

    pub(super) fn event(
        &mut self,
        at_ms: u64,
        kind: EventKind,
        op_index: Option<u32>,
        attempt: u32,
        worker: &str,
        message: &str,
    ) -> u32 {
        let worker = self.workers.number(worker);
        let message = if message.is_empty() {
            0
        } else {
            self.event_messages.push(message.into());
            self.event_messages.len() as u32
        };
        self.events.push(PackedEvent {
            at_ms,
            op_index: op_index.unwrap_or(u32::MAX),
            attempt,
            worker,
            message,
            kind,
            batch_state: None,
        });
        message
    }

    /// Ends op `index` in `state` (skipped or cancelled) for `cause`, whose
    /// message and data its record and its event (`kind`) both carry.
    pub(super) fn end_op_for(
        &mut self,
        index: u32,
        state: OpState,
        kind: EventKind,
        cause: &Cause,
        now_ms: u64,
    ) {
        let attempt = self.ops[index as usize].record.attempts;
        let message = cause.message();
        self.end_op_caused(index, state, message.clone(), Some(cause.clone()));
        let number = self.event(now_ms, kind, Some(index), attempt, "", &message);
        self.event_causes.insert(number, cause.clone());
    }

    /// Event `seq` (1-based), unpacked.
    pub(super) fn unpack(&self, seq: u64, event: &PackedEvent) -> Event {
        let message = match event.message {
            0 => String::new(),
            number => self
                .event_messages
                .get(number as usize - 1)
                .map_or_else(String::new, |message| message.to_string()),
        };
        Event {
            seq,
            at_ms: event.at_ms,
            kind: event.kind,
            op_index: (event.op_index != u32::MAX).then_some(event.op_index),
            attempt: event.attempt,
            worker: self.workers.name(event.worker).to_owned(),
            message,
            cause: self.event_causes.get(&event.message).cloned(),
            batch_state: event.batch_state,
        }
    }

    pub(super) fn push_ready(&mut self, index: u32) {
        let op = &mut self.ops[index as usize];
        op.record.state = OpState::Ready;
        let priority = clamp_priority(op.priority);
        self.ready[priority].push_back(index);
    }

    /// One input of `index` arrived: count down, ready at zero. Returns
    /// whether the op became ready.
    pub(super) fn count_down(&mut self, index: u32) -> bool {
        let Some(op) = self.ops.get_mut(index as usize) else {
            return false;
        };
        if op.record.state != OpState::Waiting {
            return false;
        }
        op.pending = op.pending.saturating_sub(1);
        if op.pending == 0 {
            self.push_ready(index);
            return true;
        }
        false
    }

    pub(super) fn clear_lease(&mut self, index: u32) {
        if let Some(until) = self.lease_until.remove(&index) {
            self.leases.remove(&(until, index));
        }
    }

    /// Whether the op runs exactly this attempt now.
    pub(super) fn runs(&self, claimed: Claimed) -> bool {
        self.ops.get(claimed.index as usize).is_some_and(|op| {
            op.record.state == OpState::Running && op.record.attempts == claimed.attempt
        })
    }

    pub(super) fn set_lease(&mut self, index: u32, until: u64) {
        self.clear_lease(index);
        self.lease_until.insert(index, until);
        self.leases.insert((until, index));
    }

    pub(super) fn clear_delay(&mut self, index: u32) {
        if let Some(at) = self.retry_at.remove(&index) {
            self.delayed.remove(&(at, index));
        }
    }

    /// The op leaves Running (not ended): running counter -1, lease dropped.
    pub(super) fn leave_running(&mut self, index: u32) {
        self.meta.running = self.meta.running.saturating_sub(1);
        self.clear_lease(index);
    }

    /// The delay (ms, 0 = at once) before another attempt of `index`, which
    /// just failed with `kind`; `None` when there is none (see
    /// `retry_delay` in `lua/common.lua`).
    pub(super) fn retry_delay(
        &self,
        index: u32,
        kind: FailureKind,
        retry_after_ms: u64,
    ) -> Option<u64> {
        let op = &self.ops[index as usize];
        let policy = op.retry();
        let allowed = match kind {
            FailureKind::Error => policy.on_failure,
            FailureKind::Timeout => policy.on_timeout,
            FailureKind::LostWorker => policy.on_lost_worker,
            FailureKind::Permanent => false,
        };
        let used = op.record.attempts.saturating_sub(op.handed_back);
        // After fail_fast, and in the sequential pass, every failure is final.
        if !allowed || self.fail_fast_fired || self.sequential || used >= op.max_attempts {
            return None;
        }
        let delay = backoff_delay(policy, used, random_unit());
        Some(delay.max(retry_after_ms.min(MAX_DELAY_MS as u64)))
    }

    /// Another attempt of `index` after `delay` ms: onto its ready queue at
    /// once, or (state Ready) into the delayed set. Returns the ready-at.
    pub(super) fn requeue(&mut self, index: u32, delay: u64, now_ms: u64) -> u64 {
        if delay == 0 {
            self.push_ready(index);
            return now_ms;
        }
        let ready_at = now_ms.saturating_add(delay);
        self.ops[index as usize].record.state = OpState::Ready;
        self.retry_at.insert(index, ready_at);
        self.delayed.insert((ready_at, index));
        ready_at
    }

    pub(super) fn next_retry_at(&self) -> Option<u64> {
        self.delayed.first().map(|(at, _)| *at)
    }

    /// Moves delayed retries whose ready-at passed onto their ready queues.
    pub(super) fn promote_due(&mut self, now_ms: u64) {
        while let Some(&(at, index)) = self.delayed.first() {
            if at > now_ms {
                break;
            }
            self.delayed.remove(&(at, index));
            self.retry_at.remove(&index);
            let op = &self.ops[index as usize];
            if op.record.state == OpState::Ready {
                let priority = clamp_priority(op.priority);
                self.ready[priority].push_back(index);
            }
        }
    }

    /// Attempt `attempt` of running op `index` failed with `kind`: another
    /// attempt (a `retrying` event, returns true) or failed for good (the
    /// caller records the end and returns false).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn retry_or_not(
        &mut self,
        index: u32,
        attempt: u32,
        kind: FailureKind,
        retry_after_ms: u64,
        worker: &str,
        error: &str,
        now_ms: u64,
    ) -> bool {
        let Some(delay) = self.retry_delay(index, kind, retry_after_ms) else {
            return false;
        };
        let ready_at = self.requeue(index, delay, now_ms);
        let message = retry_message(error, delay, ready_at);
        self.event(
            now_ms,
            EventKind::OpRetrying,
            Some(index),
            attempt,
            worker,
            &message,
        );
        true
    }

    /// Memory key `key` arrived for op `index` (one of its `wait_for`
    /// keys, or of its `wait_for_any` group when `any`). Idempotent, like
    /// `arrive` in `lua/common.lua`. Returns (countdown decremented, op
    /// became ready).
    pub(super) fn arrive(&mut self, index: u32, key: &str, any: bool) -> (bool, bool) {
        let Some(op) = self.ops.get_mut(index as usize) else {
            return (false, false);
        };
        if op.record.state != OpState::Waiting {
            return (false, false);
        }
        // Only an op with memory waits has waiters.
        let Some(waits) = op.waits.as_deref_mut() else {
            return (false, false);
        };
        if any {
            if waits.any_done {
                return (false, false);
            }
            waits.any_done = true;
        } else if !waits.arrived.insert(key.to_owned()) {
            return (false, false);
        }
        (true, self.count_down(index))
    }

    /// `index` failed for good: on a fail_fast batch, the first such failure
    /// cancels every op still waiting or ready.
    pub(super) fn apply_fail_fast(&mut self, index: u32, now_ms: u64) {
        if self.meta.on_failure == OnFailure::FailFast && !self.fail_fast_fired {
            self.fail_fast_fired = true;
            let cause = Cause::FailFast { index };
            self.cancel_where(
                &[OpState::Waiting, OpState::Ready],
                &cause.message(),
                Some(&cause),
                now_ms,
            );
        }
    }

    /// The keys op `index` still misses, as `` `a`, `b` `` (empty: none).
    pub(super) fn missing_keys(&self, index: u32) -> String {
        let Some(waits) = self
            .ops
            .get(index as usize)
            .and_then(|op| op.waits.as_deref())
        else {
            return String::new();
        };
        waits
            .missing()
            .map(|key| format!("`{key}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn end_op(&mut self, index: u32, state: OpState, error: String) {
        self.end_op_caused(index, state, error, None);
    }

    pub(super) fn end_op_caused(
        &mut self,
        index: u32,
        state: OpState,
        error: String,
        cause: Option<Cause>,
    ) {
        self.clear_lease(index);
        self.clear_delay(index);
        let op = &mut self.ops[index as usize];
        op.record.state = state;
        op.record.set_error(error, cause);
        match state {
            OpState::Succeeded => self.meta.succeeded += 1,
            OpState::Failed => self.meta.failed += 1,
            OpState::Skipped => self.meta.skipped += 1,
            OpState::Cancelled => self.meta.cancelled += 1,
            _ => {}
        }
        self.writers.ended(index);
    }

    /// `index` just ended in `state`: counts down or skips its dependents,
    /// transitively (a worklist, not recursion). Returns how many became ready.
    pub(super) fn propagate(&mut self, index: u32, state: OpState, now_ms: u64) -> u32 {
        let mut became_ready = 0;
        let mut worklist = VecDeque::from([(index, state)]);
        while let Some((ended, ended_state)) = worklist.pop_front() {
            let dependents = self.ops[ended as usize].dependents.clone();
            for dependent in dependents {
                let Some(op) = self.ops.get(dependent as usize) else {
                    continue;
                };
                if ended_state == OpState::Succeeded || op.run_if_always {
                    if self.count_down(dependent) {
                        became_ready += 1;
                    }
                } else if !op.record.state.is_final() {
                    let cause = Cause::Dependency {
                        index: ended,
                        state: ended_state,
                    };
                    self.end_op_for(
                        dependent,
                        OpState::Skipped,
                        EventKind::OpSkipped,
                        &cause,
                        now_ms,
                    );
                    worklist.push_back((dependent, OpState::Skipped));
                }
            }
        }
        became_ready
    }

    /// Cancels every op in one of `states`, in index order; returns them with
    /// whether each was running.
    pub(super) fn cancel_where(
        &mut self,
        states: &[OpState],
        reason: &str,
        cause: Option<&Cause>,
        now_ms: u64,
    ) -> Vec<(Claimed, bool)> {
        let mut cancelled = Vec::new();
        for index in 0..self.ops.len() as u32 {
            let record = &self.ops[index as usize].record;
            if !states.contains(&record.state) {
                continue;
            }
            let (was, attempt) = (record.state, record.attempts);
            if was == OpState::Running {
                self.meta.running = self.meta.running.saturating_sub(1);
            }
            self.end_op_caused(index, OpState::Cancelled, reason.to_owned(), cause.cloned());
            let number = self.event(
                now_ms,
                EventKind::OpCancelled,
                Some(index),
                attempt,
                "",
                reason,
            );
            if let Some(cause) = cause {
                self.event_causes.insert(number, cause.clone());
            }
            cancelled.push((Claimed { index, attempt }, was == OpState::Running));
        }
        for queue in &mut self.ready {
            queue.clear();
        }
        cancelled
    }

    /// Finishes the batch if every op has ended — or, for `retry_failed:
    /// sequential`, starts its sequential pass instead (as `finish_if_done`
    /// in `lua/common.lua`). Returns the state it finished in, and how many
    /// ops a pass it started made ready.
    pub(super) fn finish_if_done(&mut self, now_ms: u64) -> (Option<BatchState>, u32) {
        if self.meta.state != BatchState::Running || self.meta.done() < self.meta.total {
            return (None, 0);
        }
        if self.meta.failed > 0
            && self.retry_failed_sequential
            && !self.sequential
            && !self.cancel_requested
            && !self.deadline_fired
            && !self.fail_fast_fired
        {
            return (None, self.start_sequential_pass(now_ms));
        }
        let state = if self.cancel_requested {
            BatchState::Cancelled
        } else if self.deadline_fired {
            // expire_deadline set the error already.
            BatchState::Failed
        } else if self.meta.succeeded == self.meta.total {
            BatchState::Succeeded
        } else {
            BatchState::Failed
        };
        if state == BatchState::Failed && !self.deadline_fired {
            self.meta.error = failed_summary(&self.meta);
        }
        self.leases.clear();
        self.lease_until.clear();
        self.delayed.clear();
        self.retry_at.clear();
        self.meta.state = state;
        self.meta.finished_ms = Some(now_ms);
        if self.retain_ms > 0 {
            self.expires_at_ms = Some(now_ms + self.retain_ms);
        }
        let message = self.meta.error.clone();
        self.event(now_ms, EventKind::BatchFinished, None, 0, "", &message);
        if let Some(last) = self.events.last_mut() {
            last.batch_state = Some(state);
        }
        (Some(state), 0)
    }

    /// `retry_failed: sequential` (see the `Store` trait doc): every op has
    /// ended, some failed. Every Failed or Skipped op goes back to Waiting,
    /// pending = how many of its dependencies are among them; its memory
    /// waits count as arrived, its wait deadline and record are dropped.
    /// Those pending nothing are queued in index order. Returns how many
    /// became ready.
    pub(super) fn start_sequential_pass(&mut self, now_ms: u64) -> u32 {
        let again: BTreeSet<u32> = (0..self.ops.len() as u32)
            .filter(|&index| {
                matches!(
                    self.ops[index as usize].record.state,
                    OpState::Failed | OpState::Skipped
                )
            })
            .collect();
        let mut pending: HashMap<u32, u32> = HashMap::new();
        for &index in &again {
            for &dependent in &self.ops[index as usize].dependents {
                if again.contains(&dependent) {
                    *pending.entry(dependent).or_default() += 1;
                }
            }
        }
        self.sequential = true;
        let message = sequential_pass_message(self.meta.failed);
        // Every op had ended, so the queues hold nothing claimable.
        for queue in &mut self.ready {
            queue.clear();
        }
        self.deadlines.retain(|(_, index)| !again.contains(index));
        let mut became_ready = 0;
        for &index in &again {
            let op = &mut self.ops[index as usize];
            let was = op.record.state;
            match was {
                OpState::Failed => self.meta.failed = self.meta.failed.saturating_sub(1),
                _ => self.meta.skipped = self.meta.skipped.saturating_sub(1),
            }
            if let Some(waits) = op.waits.as_deref_mut() {
                waits.arrived = waits.all.iter().cloned().collect();
                waits.any_done = true;
            }
            // Its record goes, and its duration with it from the sum.
            self.meta.sequential_ms = self
                .meta
                .sequential_ms
                .saturating_sub(op.record.duration_ms);
            op.record = Record::new(OpState::Waiting, op.record.attempts);
            op.pending = pending.get(&index).copied().unwrap_or(0);
            let attempt = op.record.attempts;
            let ready = op.pending == 0;
            let retrying = if was == OpState::Failed {
                message.as_str()
            } else {
                SEQUENTIAL_PASS_REQUEUED
            };
            self.event(
                now_ms,
                EventKind::OpRetrying,
                Some(index),
                attempt,
                "",
                retrying,
            );
            if ready {
                self.push_ready(index);
                became_ready += 1;
            }
        }
        became_ready
    }
}

/// The message of a `retrying` event: the failure, then when (as
/// `retry_message` in `lua/common.lua`).
pub(super) fn retry_message(error: &str, delay: u64, ready_at: u64) -> String {
    if delay == 0 {
        return error.to_owned();
    }
    let when = format!("next attempt at {} (in {delay} ms)", rfc3339_ms(ready_at));
    if error.is_empty() {
        when
    } else {
        format!("{error}; {when}")
    }
}

/// The batch error of a batch that ended `Failed`.
pub(crate) fn failed_summary(meta: &BatchMeta) -> String {
    format!(
        "{} failed, {} skipped, {} cancelled",
        meta.failed, meta.skipped, meta.cancelled
    )
}

/// A key is hopeless when it has declared writers, all ended, and it does
/// not exist in the batch's memory.
pub(super) fn key_hopeless(
    scope_data: Option<&mut ScopeData>,
    writers: &Writers,
    key: &str,
) -> bool {
    writers.all_ended(key) && scope_data.is_none_or(|scope_data| scope_data.live(key).is_none())
}

/// Works off the keys whose last declared writer ended (see
/// `settle_hopeless` in `lua/common.lua`, which this mirrors): waiters of a
/// hopeless key still waiting — for a `wait_for` key, or for a
/// `wait_for_any` group all of whose keys are hopeless — are skipped with
/// their dependents; a `run_if_always` one counts the wait as satisfied.
/// Returns how many ops became ready.
pub(super) fn settle_hopeless(
    scopes: &mut HashMap<MemoryScope, ScopeData>,
    data: &mut BatchData,
    now_ms: u64,
) -> u32 {
    let mut became_ready = 0;
    let mut head = 0;
    while head < data.writers.hopeless.len() {
        let key = data.writers.hopeless[head].clone();
        head += 1;
        let mut scope_data = scopes.get_mut(&data.memory);
        if scope_data
            .as_deref_mut()
            .is_some_and(|scope_data| scope_data.live(&key).is_some())
        {
            continue;
        }
        let waits: Vec<Waiter> = scope_data
            .as_deref()
            .and_then(|scope_data| scope_data.waiters.get(&key))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        let mut cause: Option<Cause> = None;
        for waiter in waits {
            let Some(op) = data.ops.get(waiter.index as usize) else {
                continue;
            };
            if op.record.state != OpState::Waiting {
                continue;
            }
            if waiter.any {
                let group: Vec<String> = op
                    .waits
                    .as_deref()
                    .map(|waits| waits.any.clone())
                    .unwrap_or_default();
                let all_hopeless = !group.is_empty()
                    && group.iter().all(|other| {
                        key_hopeless(scopes.get_mut(&data.memory), &data.writers, other)
                    });
                if !all_hopeless {
                    continue;
                }
            }
            if let Some(set) = scopes
                .get_mut(&data.memory)
                .and_then(|scope_data| scope_data.waiters.get_mut(&key))
            {
                set.remove(&waiter);
            }
            let op = &data.ops[waiter.index as usize];
            if op.run_if_always {
                if data.arrive(waiter.index, &key, waiter.any).1 {
                    became_ready += 1;
                }
                continue;
            }
            let cause = cause
                .get_or_insert_with(|| {
                    let writers: Vec<(u32, OpState)> = data
                        .writers
                        .by_key
                        .get(&key)
                        .map(|(_, writers)| {
                            writers
                                .iter()
                                .map(|&writer| (writer, data.ops[writer as usize].record.state))
                                .collect()
                        })
                        .unwrap_or_default();
                    Cause::never_written(&key, &writers)
                })
                .clone();
            data.end_op_for(
                waiter.index,
                OpState::Skipped,
                EventKind::OpSkipped,
                &cause,
                now_ms,
            );
            became_ready += data.propagate(waiter.index, OpState::Skipped, now_ms);
        }
    }
    data.writers.hopeless.clear();
    became_ready
}
