//! `memory.put` and `memory.get`: the op's memory (its batch's namespace, or the batch's own), through the coordinator.

use volley_kinds::{MemoryGetArgs, MemoryPutArgs};

use volley_worker::PutOptions;
use volley_worker::{HandlerError, OpContext, OpOutput};

pub(super) async fn put(ctx: &OpContext, args: MemoryPutArgs) -> Result<OpOutput, HandlerError> {
    let ttl = args.ttl.as_deref().map(parse_ttl).transpose()?;
    let options = PutOptions {
        ttl,
        ..PutOptions::default()
    };
    let version = ctx
        .memory()
        .put_with(&args.key, args.value.clone().into_bytes(), options)
        .await?;
    Ok(OpOutput::text(args.value).with_details(serde_json::json!({"version": version})))
}

/// A humantime ttl ("30s", "1h 30m"); zero is refused, as it would mean "never expires" on the wire.
fn parse_ttl(ttl: &str) -> Result<std::time::Duration, HandlerError> {
    let invalid = |message: String| {
        HandlerError::permanent(format!(
            "invalid args for kind memory.put: args.ttl: {message}"
        ))
    };
    let parsed = humantime::parse_duration(ttl.trim())
        .map_err(|error| invalid(format!("{ttl:?} is not a duration like \"30s\": {error}")))?;
    if parsed.is_zero() {
        return Err(invalid("must be more than 0".to_owned()));
    }
    Ok(parsed)
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

    use std::time::Duration;

    use crate::{BuiltinConfig, BuiltinRegistry};
    use volley_worker::OpContext;
    use volley_worker::Registry;
    use volley_worker::{LocalMemory, MemoryScope, MemoryStore};

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

    #[tokio::test]
    async fn put_honours_ttl_and_refuses_a_bad_one() {
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        let memory: Arc<dyn MemoryStore> = Arc::new(LocalMemory::default());
        let ctx = OpContext::builder("memory.put")
            .batch("b1")
            .memory(Arc::clone(&memory))
            .build();
        let put = registry.get("memory.put").unwrap();
        let output = put
            .run(&ctx, json!({"key": "k", "value": "v", "ttl": "1h 30m"}))
            .await
            .unwrap();
        assert_eq!(output.output, "v");
        assert_eq!(output.details.unwrap()["version"], 1);

        for bad in ["soon", "30", "0s"] {
            let error = put
                .run(&ctx, json!({"key": "k", "value": "v", "ttl": bad}))
                .await
                .unwrap_err();
            assert!(!error.is_retryable(), "{bad}");
            assert!(error.message().contains("args.ttl"), "{bad}: {error}");
        }
        assert_eq!(super::parse_ttl("30s").unwrap(), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn put_and_get_use_the_namespace_when_the_batch_has_one() {
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        let memory: Arc<dyn MemoryStore> = Arc::new(LocalMemory::default());
        let ctx = OpContext::builder("memory.put")
            .batch("b1")
            .namespace("swarm")
            .memory(Arc::clone(&memory))
            .build();
        registry
            .get("memory.put")
            .unwrap()
            .run(&ctx, json!({"key": "k", "value": "shared"}))
            .await
            .unwrap();
        let shared = MemoryScope::Namespace("swarm".to_owned());
        assert_eq!(
            memory.get(&shared, "k").await.unwrap().unwrap().value,
            b"shared"
        );
        let own = MemoryScope::Batch("b1".into());
        assert_eq!(memory.get(&own, "k").await.unwrap(), None);
    }
}
