//! Dynamic fan-out: ops a running op adds to its own batch. They are
//! validated with the whole batch, like a submission (ids unique across the
//! batch, `after` may name existing ops, no cycles, no hazards), then the
//! store grows the batch in one step and the dispatcher gets the new plan.
//!
//! A new op may wait for a key no op writes only if that key already exists
//! in the batch's memory (or the batch allows unwritten keys): a key the
//! ops already running wrote, or a client did, is as good as a writer. The
//! ops already in the batch were accepted once and are not judged again.
//!
//! A spawn with an idempotency key keeps its answer under the key in that
//! same step, so a retried call gets the first call's answer instead of a
//! "duplicate id" for the ops it added.

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message;
use tracing::info;
use volley_proto::{BatchId, v1};
use volley_store::{AddOpsRefusal, NewOp, SpawnOnce, StoreError};

use crate::auth::Principal;
use crate::dispatch::Command;
use crate::domain::SpawnOutcome;
use crate::error::CoordinatorError;
use crate::idempotency::{self, SpawnRecord};
use crate::plans::{PlannedBatch, stored_batch};
use crate::service::{Access, Coordinator, new_op, now_ms};
use crate::tracing_ctx::BatchTrace;
use volley_plan::LivenessCheck;
use volley_store::MemoryScope;

/// Tries when another spawn into the same batch wins the race.
const SPAWN_TRIES: usize = 5;
/// Keys looked up in the batch's memory for one spawn. Past it the new ops'
/// waits are taken on trust (as if every key existed): a warning, never a
/// refusal, rather than one store call per key of a huge spawn.
const MAX_KEYS_LOOKED_UP: usize = 256;

impl Coordinator {
    #[tracing::instrument(skip_all, fields(batch = %batch, ops = ops.len(), spawned_by))]
    pub async fn spawn_ops(
        &self,
        batch: &BatchId,
        mut ops: Vec<v1::Op>,
        spawned_by: &str,
        idempotency_key: &str,
        principal: &Principal,
    ) -> Result<SpawnOutcome, CoordinatorError> {
        if ops.is_empty() {
            return Err(CoordinatorError::BadRequest("no ops to spawn".into()));
        }
        idempotency::check_key(idempotency_key)
            .map_err(|error| CoordinatorError::BadRequest(error.to_string()))?;
        let planned = self.authorize(principal, batch, Access::Spawn).await?;
        let digest = if idempotency_key.is_empty() {
            String::new()
        } else {
            idempotency::spawn_digest(&mut ops)
        };
        // A retry of a spawn that went through: the first call's answer.
        // (Read before planning, which would find the ops' ids taken.)
        if !idempotency_key.is_empty()
            && let Some(record) = self.store().spawn_record(batch, idempotency_key).await?
        {
            return replayed_spawn(batch, idempotency_key, &digest, &record);
        }
        // An op's token speaks for that op: what it spawns is recorded as
        // spawned by it, whatever the request says.
        let spawner = match &principal.agent {
            Some(agent) => planned.op_id(agent.op_index),
            None => spawned_by,
        };
        // Recorded in the batch's `OpsAdded` event: who added the ops.
        let note = if spawner.is_empty() {
            format!("by token {}", principal.token_id)
        } else {
            format!("by token {} (op `{spawner}`)", principal.token_id)
        };
        let present_keys = self
            .present_wait_keys(&planned.memory_scope(), &ops)
            .await?;
        // One spawn at a time per coordinator: each re-plans the whole batch.
        let _turn = self.spawn_lock().lock().await;
        for _ in 0..SPAWN_TRIES {
            let spec = self
                .store()
                .batch_spec(batch)
                .await?
                .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
            let mut combined = stored_batch(batch, &spec)?;
            let first_index = combined.ops.len() as u32;
            let trace = BatchTrace::from_carrier(&combined.trace_context);
            let tenant = crate::auth::tenant_or_default(&combined.tenant).to_owned();
            combined.ops.extend(ops.iter().cloned());
            let coordinator = self.clone();
            let liveness = LivenessCheck {
                checked_from: first_index,
                present_keys: present_keys.clone(),
            };
            let plan = tokio::task::spawn_blocking(move || {
                volley_plan::plan_with(
                    &combined,
                    &|kind| coordinator.known_kind(kind),
                    &coordinator.config().limits,
                    &liveness,
                )
            })
            .await
            .map_err(|error| CoordinatorError::BadRequest(format!("planning panicked: {error}")))?
            .map_err(CoordinatorError::Invalid)?;
            let created_ms = self
                .store()
                .meta(batch)
                .await?
                .map_or(0, |meta| meta.created_ms);
            let new_ops: Vec<NewOp> = plan.ops[first_index as usize..]
                .iter()
                .map(|op| {
                    let mut new = new_op(op, created_ms.max(now_ms()));
                    new.after = op.deps.to_vec();
                    new
                })
                .collect();
            let chunk = v1::OpChunk { ops: ops.clone() }.encode_to_vec();
            let warnings = plan.warnings.clone();
            let once = (!idempotency_key.is_empty()).then(|| SpawnOnce {
                key: idempotency_key.to_owned(),
                record: serde_json::to_string(&SpawnRecord {
                    digest: digest.clone(),
                    op_count: ops.len() as u32,
                    warnings: warnings.clone(),
                })
                .expect("a SpawnRecord always serializes"),
            });
            match self
                .store()
                .add_ops(
                    batch,
                    first_index,
                    new_ops,
                    chunk,
                    &note,
                    now_ms(),
                    once.as_ref(),
                )
                .await
            {
                Ok(outcome) => {
                    let planned = Arc::new(PlannedBatch::new(batch.clone(), plan, trace, tenant));
                    self.plans().insert(planned.clone());
                    self.dispatch().send(Command::BatchReplanned(planned)).await;
                    if outcome.finished.is_some() {
                        self.plans().finished(batch);
                    }
                    info!(%batch, added = ops.len(), spawned_by = spawner, audit = "spawn", token = %principal.token_id, tenant = %principal.tenant, "ops spawned");
                    idempotency::fault_point("spawn-stored");
                    return Ok(SpawnOutcome {
                        op_count: ops.len() as u32,
                        warnings,
                    });
                }
                // The same key won a race with this call (on another
                // coordinator): its answer.
                Err(StoreError::AlreadySpawned { record, .. }) => {
                    return replayed_spawn(batch, idempotency_key, &digest, &record);
                }
                // Another spawn grew the batch first: plan again on top of it.
                Err(StoreError::CannotAddOps {
                    reason: AddOpsRefusal::FirstIndexTaken { .. },
                    ..
                }) => {
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(CoordinatorError::BadRequest(format!(
            "batch {batch} kept growing under this spawn; try again"
        )))
    }

    /// The keys `ops` wait for (`wait_for`, `wait_for_any`, `${memory.K}`)
    /// that already exist in `scope`. A shared namespace is not checked (the
    /// planner does not judge its waits), nor is a spawn that waits for more
    /// than [`MAX_KEYS_LOOKED_UP`] keys: all its keys count as present.
    async fn present_wait_keys(
        &self,
        scope: &MemoryScope,
        ops: &[v1::Op],
    ) -> Result<HashSet<String>, CoordinatorError> {
        if matches!(scope, MemoryScope::Shared(_)) {
            return Ok(HashSet::new());
        }
        let mut waited: HashSet<String> = HashSet::new();
        for op in ops {
            waited.extend(op.wait_for.iter().chain(&op.wait_for_any).cloned());
            // Args that do not parse are the planner's to report.
            if let Ok(args) = serde_json::from_str::<serde_json::Value>(&op.args_json)
                && let Ok(references) = volley_kinds::located_references(&args)
            {
                waited.extend(references.into_iter().filter_map(
                    |(_, reference)| match reference {
                        volley_kinds::Reference::Memory(key) => Some(key),
                        _ => None,
                    },
                ));
            }
        }
        if waited.len() > MAX_KEYS_LOOKED_UP {
            return Ok(waited);
        }
        let mut present = HashSet::new();
        for key in waited {
            // Bad keys are the planner's to report, not the store's.
            if volley_plan::check_memory_key(&key).is_err() {
                continue;
            }
            // A listing from the key itself holds it first if it exists
            // (it sorts before every longer key it prefixes), without
            // reading its value.
            let listed = self.store().memory_list(scope, &key, None, 1).await?;
            if listed.first().is_some_and(|info| info.key == key) {
                present.insert(key);
            }
        }
        Ok(present)
    }
}

/// The answer to a spawn whose key was used already: the first call's if
/// the ops are the same, else an error.
fn replayed_spawn(
    batch: &BatchId,
    key: &str,
    digest: &str,
    record: &str,
) -> Result<SpawnOutcome, CoordinatorError> {
    let record: SpawnRecord = serde_json::from_str(record).map_err(|error| {
        StoreError::Corrupt(format!(
            "spawn record of key `{key}` in batch {batch}: {error}"
        ))
    })?;
    if record.digest != digest {
        return Err(CoordinatorError::IdempotencyConflict {
            key: key.to_owned(),
            what: format!("other ops spawned into batch `{batch}`"),
        });
    }
    info!(%batch, key, "idempotent retry: ops spawned already");
    Ok(SpawnOutcome {
        op_count: record.op_count,
        warnings: record.warnings,
    })
}
