//! `memory.put` and `memory.get`: the batch's memory, through the coordinator.

use volley_kinds::{MemoryGetArgs, MemoryPutArgs};

use crate::handler::{HandlerError, OpContext, OpOutput};

pub(super) async fn put(ctx: &OpContext, args: MemoryPutArgs) -> Result<OpOutput, HandlerError> {
    ctx.memory()
        .put(&args.key, args.value.clone().into_bytes())
        .await?;
    let output = OpOutput::text(args.value);
    // The memory service has no expiry yet; say so rather than pretend.
    Ok(match args.ttl {
        Some(ttl) => output.with_details(serde_json::json!({"ttl_ignored": ttl})),
        None => output,
    })
}

pub(super) async fn get(ctx: &OpContext, args: MemoryGetArgs) -> Result<OpOutput, HandlerError> {
    match ctx.memory().get_string(&args.key).await? {
        Some(value) => Ok(OpOutput::text(value)),
        None => Err(HandlerError::permanent(format!(
            "memory key {} not found",
            args.key
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::handler::OpContext;
    use crate::memory::{LocalMemory, MemoryStore};
    use crate::registry::{BuiltinConfig, Registry};

    #[tokio::test]
    async fn put_then_get_round_trips_within_a_batch() {
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        let memory: Arc<dyn MemoryStore> = Arc::new(LocalMemory::default());
        let put_ctx = OpContext::builder("memory.put")
            .batch("b1")
            .memory(Arc::clone(&memory))
            .build();
        let put = registry.get("memory.put").unwrap();
        let output = put
            .run(&put_ctx, json!({"key": "swarm/x", "value": "v1"}))
            .await
            .unwrap();
        assert_eq!(output.output, "v1");

        let get_ctx = OpContext::builder("memory.get")
            .batch("b1")
            .memory(Arc::clone(&memory))
            .build();
        let get = registry.get("memory.get").unwrap();
        let output = get.run(&get_ctx, json!({"key": "swarm/x"})).await.unwrap();
        assert_eq!(output.output, "v1");

        let other_batch = OpContext::builder("memory.get")
            .batch("b2")
            .memory(memory)
            .build();
        let error = get
            .run(&other_batch, json!({"key": "swarm/x"}))
            .await
            .unwrap_err();
        assert_eq!(error.message(), "memory key swarm/x not found");
        assert!(!error.is_retryable());
    }
}
