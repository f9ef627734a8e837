//! The executor runs assignments into results: built-in and user kinds,
//! bad args, handler errors, retry requests, timeouts, cancels, panics.
//! (An integration test because it runs the built-ins, a crate of their own
//! that depends on this one.)

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
use std::sync::Arc;
use std::time::Duration;

use volley_builtins::{BuiltinConfig, BuiltinRegistry};
use volley_worker::v1::{Assignment, FailureKind};
use volley_worker::{
    CancellationToken, Executor, HandlerError, LocalMemory, OpOutput, Registry, handler_fn,
};

fn executor() -> Executor {
    let mut registry = Registry::with_builtins(&BuiltinConfig::default());
    registry.register(
        "fail_later",
        handler_fn(|_ctx, _args| async move {
            Err(HandlerError::retry_after("busy", Duration::from_secs(2))
                .with_details(serde_json::json!({"n": 1})))
        }),
    );
    registry.register(
        "refuse",
        handler_fn(|_ctx, _args| async move {
            Err(HandlerError::permanent("never").with_details(serde_json::json!({"n": 2})))
        }),
    );
    registry.register(
        "flaky",
        handler_fn(|_ctx, _args| async move { Err(HandlerError::retry("try again")) }),
    );
    registry.register(
        // Sees the cancel itself and returns its own error.
        "cooperative",
        handler_fn(|ctx, _args| async move {
            ctx.cancellation().cancelled().await;
            Err(HandlerError::retry_after(
                "stopped on cancel",
                Duration::from_millis(5),
            ))
        }),
    );
    registry.register(
        "explode",
        handler_fn(|_ctx, _args| async move { panic!("kaboom") }),
    );
    Executor::new(registry, Arc::new(LocalMemory::default()), None, false)
}

fn assignment(kind: &str, args_json: &str, timeout_ms: u64) -> Assignment {
    Assignment {
        batch_id: "b1".into(),
        op_index: 7,
        op_id: "op7".into(),
        kind: kind.into(),
        args_json: args_json.into(),
        attempt: 2,
        timeout_ms,
        ..Assignment::default()
    }
}

#[tokio::test]
async fn success_carries_output_and_identity() {
    let result = executor()
        .run(
            assignment("echo", r#"{"text":"hi"}"#, 0),
            CancellationToken::new(),
        )
        .await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.output, "hi");
    assert_eq!(result.failure_kind(), FailureKind::Unspecified);
    assert_eq!(result.retry_after_ms, 0);
    assert_eq!(
        (result.batch_id.as_str(), result.op_index, result.attempt),
        ("b1", 7, 2)
    );
    assert!(result.started_at_ms > 0);
}

#[tokio::test]
async fn unknown_kind_and_bad_json_are_permanent_failures() {
    let result = executor()
        .run(assignment("nope", "{}", 0), CancellationToken::new())
        .await;
    assert!(!result.ok);
    assert!(
        result.error.contains("kind nope is not registered"),
        "{}",
        result.error
    );
    let details: serde_json::Value = serde_json::from_str(&result.details_json).unwrap();
    assert_eq!(details["retryable"], false);
    assert_eq!(result.failure_kind(), FailureKind::Permanent);

    let result = executor()
        .run(assignment("echo", "{not json", 0), CancellationToken::new())
        .await;
    assert!(
        result.error.contains("args_json is not valid JSON"),
        "{}",
        result.error
    );
    assert_eq!(result.failure_kind(), FailureKind::Permanent);

    // Args that parse but do not fit the kind.
    let result = executor()
        .run(
            assignment("echo", r#"{"txt":"x"}"#, 0),
            CancellationToken::new(),
        )
        .await;
    assert!(
        result.error.contains("invalid args for kind echo"),
        "{}",
        result.error
    );
    assert_eq!(result.failure_kind(), FailureKind::Permanent);
    assert_eq!(result.retry_after_ms, 0);
}

#[tokio::test]
async fn refusals_of_builtins_are_permanent() {
    // No --allow-shell, no --root.
    for (kind, args) in [
        ("shell", r#"{"cmd":"echo hi"}"#),
        ("read", r#"{"path":"a"}"#),
    ] {
        let result = executor()
            .run(assignment(kind, args, 0), CancellationToken::new())
            .await;
        assert!(!result.ok, "{kind}");
        assert_eq!(result.failure_kind(), FailureKind::Permanent, "{kind}");
        let details: serde_json::Value = serde_json::from_str(&result.details_json).unwrap();
        assert_eq!(details["retryable"], false, "{kind}");
    }
    // A path escaping the worker's root.
    let dir = tempfile::tempdir().unwrap();
    let config = BuiltinConfig {
        root: Some(dir.path().to_path_buf()),
        allow_shell: false,
        ..BuiltinConfig::default()
    };
    let rooted = Executor::new(
        Registry::with_builtins(&config),
        Arc::new(LocalMemory::default()),
        config.root.clone(),
        false,
    );
    let result = rooted
        .run(
            assignment("read", r#"{"path":"../../etc/passwd"}"#, 0),
            CancellationToken::new(),
        )
        .await;
    assert!(!result.ok);
    assert!(result.error.contains("escapes"), "{}", result.error);
    assert_eq!(result.failure_kind(), FailureKind::Permanent);
}

#[tokio::test]
async fn handler_errors_map_to_permanent_and_error() {
    let result = executor()
        .run(assignment("refuse", "{}", 0), CancellationToken::new())
        .await;
    assert_eq!(result.error, "never");
    assert_eq!(result.failure_kind(), FailureKind::Permanent);
    assert_eq!(result.retry_after_ms, 0);
    let details: serde_json::Value = serde_json::from_str(&result.details_json).unwrap();
    assert_eq!(details, serde_json::json!({"n": 2, "retryable": false}));

    let result = executor()
        .run(assignment("flaky", "{}", 0), CancellationToken::new())
        .await;
    assert_eq!(result.failure_kind(), FailureKind::Error);
    assert_eq!(result.retry_after_ms, 0);
}

#[tokio::test]
async fn retry_request_travels_in_details() {
    let result = executor()
        .run(assignment("fail_later", "{}", 0), CancellationToken::new())
        .await;
    assert_eq!(result.error, "busy");
    let details: serde_json::Value = serde_json::from_str(&result.details_json).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"n": 1, "retryable": true, "retry_after_ms": 2000})
    );
    assert_eq!(result.failure_kind(), FailureKind::Error);
    assert_eq!(result.retry_after_ms, 2000);
}

#[tokio::test]
async fn timeout_fails_the_op() {
    let result = executor()
        .run(
            assignment("sleep", r#"{"ms":3600000}"#, 20),
            CancellationToken::new(),
        )
        .await;
    assert!(!result.ok);
    assert_eq!(result.error, "timed out after 20ms");
    assert_eq!(result.failure_kind(), FailureKind::Timeout);
    let details: serde_json::Value = serde_json::from_str(&result.details_json).unwrap();
    assert_eq!(details["retryable"], true);
}

#[tokio::test]
async fn cancel_fails_the_op() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = executor()
        .run(assignment("sleep", r#"{"ms":3600000}"#, 0), cancel)
        .await;
    assert_eq!(result.error, "cancelled");
    assert_eq!(result.failure_kind(), FailureKind::Cancelled);

    // Cancelled while running, by the cancel branch or by the handler's own error.
    for kind in ["sleep", "cooperative"] {
        let cancel = CancellationToken::new();
        let executor = executor();
        let run = executor.run(assignment(kind, r#"{"ms":3600000}"#, 0), cancel.clone());
        tokio::pin!(run);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut run)
                .await
                .is_err()
        );
        cancel.cancel();
        let result = run.await;
        assert!(!result.ok, "{kind}");
        assert_eq!(result.failure_kind(), FailureKind::Cancelled, "{kind}");
    }
}

#[tokio::test]
async fn a_handler_that_asks_for_a_cancel_grace_ends_on_its_own_first() {
    let cleaned_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut registry = Registry::with_builtins(&BuiltinConfig::default());
    let flag = Arc::clone(&cleaned_up);
    registry.register(
        "tidy",
        handler_fn(move |ctx, _args| {
            let flag = Arc::clone(&flag);
            async move {
                ctx.ask_cancel_grace(Duration::from_secs(60));
                ctx.cancellation().cancelled().await;
                // Cleaning up takes a while (yields), within the grace.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(OpOutput::text("finished anyway"))
            }
        }),
    );
    let executor = Executor::new(registry, Arc::new(LocalMemory::default()), None, false);
    let cancel = CancellationToken::new();
    let run = executor.run(assignment("tidy", "{}", 0), cancel.clone());
    tokio::pin!(run);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut run)
            .await
            .is_err()
    );
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap();
    assert!(cleaned_up.load(std::sync::atomic::Ordering::SeqCst));
    // Cancelled, whatever the handler returned in its grace.
    assert_eq!(result.failure_kind(), FailureKind::Cancelled);
    assert_eq!(result.error, "cancelled");
}

#[tokio::test]
async fn panic_becomes_a_failure() {
    let result = executor()
        .run(assignment("explode", "{}", 0), CancellationToken::new())
        .await;
    assert!(!result.ok);
    assert!(
        result.error.contains("panicked: kaboom"),
        "{}",
        result.error
    );
    assert_eq!(result.failure_kind(), FailureKind::Error);
}
