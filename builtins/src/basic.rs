//! `sleep` (`noop` and `echo` are one-liners in the dispatcher).

use std::time::Duration;

use volley_kinds::SleepArgs;

use volley_worker::{HandlerError, OpContext, OpOutput};

pub(super) async fn sleep(ctx: &OpContext, args: SleepArgs) -> Result<OpOutput, HandlerError> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(OpOutput::empty()),
        () = ctx.cancellation().cancelled() => Err(HandlerError::retry("cancelled")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::super::test_support::run_kind;
    use crate::{BuiltinConfig, BuiltinRegistry};
    use volley_worker::Registry;
    use volley_worker::{OpContext, OpOutput};

    #[tokio::test]
    async fn noop_is_empty() {
        let output = run_kind(&BuiltinConfig::default(), "noop", json!({}))
            .await
            .unwrap();
        assert_eq!(output, OpOutput::empty());
        let output = run_kind(&BuiltinConfig::default(), "noop", serde_json::Value::Null)
            .await
            .unwrap();
        assert_eq!(output, OpOutput::empty());
    }

    #[tokio::test]
    async fn echo_returns_text() {
        let output = run_kind(&BuiltinConfig::default(), "echo", json!({"text": "hello"}))
            .await
            .unwrap();
        assert_eq!(output.output, "hello");
    }

    #[tokio::test]
    async fn sleep_finishes_empty() {
        let output = run_kind(&BuiltinConfig::default(), "sleep", json!({"ms": 1}))
            .await
            .unwrap();
        assert_eq!(output, OpOutput::empty());
    }

    #[tokio::test]
    async fn sleep_is_cancellable() {
        let registry = Registry::with_builtins(&BuiltinConfig::default());
        let ctx = OpContext::builder("sleep").build();
        ctx.cancellation().cancel();
        let handler = registry.get("sleep").unwrap();
        let error = handler
            .run(&ctx, json!({"ms": 3_600_000}))
            .await
            .unwrap_err();
        assert_eq!(error.message(), "cancelled");
    }
}
