//! `volley why BATCH OP`: why an op is where it is — which ops or keys it
//! still waits for and their states, whether any connected worker takes its
//! kind and labels, whether `max_parallel` holds it back.

use tokio::sync::oneshot;
use volley_proto::BatchId;
use volley_store::OpState;

use crate::auth::Principal;
use crate::dispatch::{Command, WhyAnswer};
use crate::domain::WhyReport;
use crate::error::CoordinatorError;
use crate::service::{Access, Coordinator, now_ms};

impl Coordinator {
    #[tracing::instrument(skip_all, fields(batch = %batch, op = op_id))]
    pub async fn why(
        &self,
        batch: &BatchId,
        op_id: &str,
        principal: &Principal,
    ) -> Result<WhyReport, CoordinatorError> {
        let mut planned = self.authorize(principal, batch, Access::Read).await?;
        if !planned.plan.ops.iter().any(|op| op.id.as_str() == op_id)
            && let Some(meta) = self.store().meta(batch).await?
        {
            // Maybe spawned through another coordinator since this one
            // planned the batch.
            planned = self.plan_covering(&planned, meta.total).await?;
        }
        let ops = &planned.plan.ops;
        let index = ops
            .iter()
            .position(|op| op.id.as_str() == op_id)
            .ok_or_else(|| {
                CoordinatorError::BadRequest(format!("batch {batch} has no op `{op_id}`"))
            })? as u32;
        let op = &ops[index as usize];
        let record = self
            .store()
            .op_records_at(batch, &[index])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| CoordinatorError::BatchNotFound(batch.clone()))?;
        let mut reasons = Vec::new();
        match record.state {
            OpState::Succeeded | OpState::Failed | OpState::Skipped | OpState::Cancelled => {
                let error = planned.describe(record.cause.as_ref(), &record.error);
                reasons.push(if error.is_empty() {
                    format!(
                        "it has ended: {:?} after {} attempt(s)",
                        record.state, record.attempts
                    )
                    .to_lowercase()
                } else {
                    // Only the state word is lowercased: the error keeps its
                    // names and times as they are.
                    let state = format!("{:?}", record.state).to_lowercase();
                    format!("it has ended ({state}): {error}")
                });
            }
            OpState::Running => {
                let answer = self.ask_dispatcher(batch, index).await;
                if answer.parked {
                    // Claimed, but no connected worker can take it.
                    reasons.extend(answer.reasons);
                } else {
                    let waits = self.store().op_waits(batch, index).await?;
                    let lease = waits
                        .lease_until_ms
                        .map(|until| {
                            format!(
                                "; its lease runs {} ms more",
                                until.saturating_sub(now_ms())
                            )
                        })
                        .unwrap_or_default();
                    reasons.push(format!(
                        "it is running (attempt {}){lease}",
                        record.attempts
                    ));
                }
            }
            OpState::Waiting | OpState::Ready => {
                let waits = self.store().op_waits(batch, index).await?;
                if !op.deps.is_empty() {
                    let deps = self.store().op_records_at(batch, &op.deps).await?;
                    for (dep, dep_record) in op.deps.iter().zip(&deps) {
                        if dep_record.state != OpState::Succeeded {
                            reasons.push(format!(
                                "it runs after `{}`, which is {}",
                                planned.op_id(*dep),
                                format!("{:?}", dep_record.state).to_lowercase()
                            ));
                        }
                    }
                }
                for key in &waits.missing_keys {
                    reasons.push(format!(
                        "it waits for memory key `{key}`, which nothing has written yet"
                    ));
                }
                if let Some(at) = waits.retry_at_ms {
                    reasons.push(format!(
                        "attempt {} failed; the next one waits {} ms more (backoff)",
                        record.attempts,
                        at.saturating_sub(now_ms())
                    ));
                }
                if record.state == OpState::Ready || (reasons.is_empty() && waits.pending == 0) {
                    let dispatcher = self.ask_dispatcher(batch, index).await.reasons;
                    if dispatcher.is_empty() {
                        reasons.push(
                            "it is ready and will be dispatched as soon as a slot frees up"
                                .to_owned(),
                        );
                    } else {
                        reasons.extend(dispatcher);
                    }
                }
            }
        }
        Ok(WhyReport {
            op_id: op_id.to_owned(),
            state: record.state,
            reasons,
        })
    }

    async fn ask_dispatcher(&self, batch: &BatchId, index: u32) -> WhyAnswer {
        let (reply, answer) = oneshot::channel();
        self.dispatch()
            .send(Command::Why {
                batch: batch.clone(),
                index,
                reply,
            })
            .await;
        answer.await.unwrap_or_default()
    }
}
