//! `shell`: `sh -c cmd` through the shared process runner (own process group, killed as a group on cancel or timeout).

use volley_kinds::ShellArgs;

use super::BuiltinState;
use super::process::{HostProgram, run_host_program};
use volley_worker::{HandlerError, OpContext, OpOutput};

pub(super) async fn shell(
    state: &BuiltinState,
    ctx: &OpContext,
    args: ShellArgs,
) -> Result<OpOutput, HandlerError> {
    if !state.allow_shell {
        return Err(HandlerError::permanent(
            "shell is disabled on this worker; start it with --allow-shell",
        ));
    }
    let env = args
        .env
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .collect();
    let program = HostProgram {
        kind: "shell",
        cmd: &args.cmd,
        cwd: args.cwd.as_deref(),
        env,
    };
    run_host_program(state, ctx, program).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::test_support::run_kind;
    use crate::{BuiltinConfig, BuiltinRegistry};
    use volley_worker::OpContext;
    use volley_worker::Registry;

    fn shell_config(root: Option<&std::path::Path>) -> BuiltinConfig {
        BuiltinConfig {
            root: root.map(|path| path.to_path_buf()),
            allow_shell: true,
            ..BuiltinConfig::default()
        }
    }

    #[tokio::test]
    async fn shell_is_refused_unless_allowed() {
        let error = run_kind(
            &BuiltinConfig::default(),
            "shell",
            json!({"cmd": "echo hi"}),
        )
        .await
        .unwrap_err();
        assert!(!error.is_retryable());
        assert_eq!(
            error.message(),
            "shell is disabled on this worker; start it with --allow-shell"
        );
    }

    #[tokio::test]
    async fn shell_returns_stdout_and_details() {
        let output = run_kind(
            &shell_config(None),
            "shell",
            json!({"cmd": "echo out; echo err >&2; echo $GREETING", "env": {"GREETING": "hello"}}),
        )
        .await
        .unwrap();
        assert_eq!(output.output, "out\nhello\n");
        let details = output.details.unwrap();
        assert_eq!(details["exit_code"], 0);
        assert_eq!(details["stderr"], "err\n");
    }

    #[tokio::test]
    async fn shell_non_zero_exit_fails_with_code_and_last_stderr_line() {
        let error = run_kind(
            &shell_config(None),
            "shell",
            json!({"cmd": "echo first >&2; echo boom >&2; exit 3"}),
        )
        .await
        .unwrap_err();
        assert_eq!(error.message(), "shell exited with code 3: boom");
        assert_eq!(error.details().unwrap()["exit_code"], 3);
        // What it printed before it failed is kept with the failure.
        let error = run_kind(
            &shell_config(None),
            "shell",
            json!({"cmd": "echo partial; exit 3"}),
        )
        .await
        .unwrap_err();
        assert_eq!(error.details().unwrap()["stdout"], "partial\n");
    }

    #[tokio::test]
    async fn shell_runs_in_root_and_confines_cwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let config = shell_config(Some(dir.path()));
        let output = run_kind(&config, "shell", json!({"cmd": "pwd"}))
            .await
            .unwrap();
        assert_eq!(
            output.output.trim(),
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );
        let output = run_kind(&config, "shell", json!({"cmd": "pwd", "cwd": "sub"}))
            .await
            .unwrap();
        assert!(output.output.trim().ends_with("/sub"));
        let error = run_kind(&config, "shell", json!({"cmd": "pwd", "cwd": "../"}))
            .await
            .unwrap_err();
        assert!(
            error.message().contains("escapes the worker's root"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_missing_cwd_is_named_not_sh() {
        let dir = tempfile::tempdir().unwrap();
        let config = shell_config(Some(dir.path()));
        let error = run_kind(&config, "shell", json!({"cmd": "pwd", "cwd": "alpha"}))
            .await
            .unwrap_err();
        let resolved = dir.path().canonicalize().unwrap().join("alpha");
        assert_eq!(
            error.message(),
            format!(
                "cwd `alpha` (resolved to {}) does not exist on this worker (a relative cwd resolves against the worker's --root)",
                resolved.display()
            )
        );
        assert!(!error.is_retryable());
    }

    #[tokio::test]
    async fn shell_stderr_is_truncated() {
        let output = run_kind(
            &shell_config(None),
            "shell",
            json!({"cmd": "head -c 100000 /dev/zero | tr '\\0' x >&2"}),
        )
        .await
        .unwrap();
        let details = output.details.unwrap();
        assert_eq!(details["stderr"].as_str().unwrap().len(), 64 * 1024);
        assert_eq!(details["stderr_truncated"], true);
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let registry = Registry::with_builtins(&shell_config(None));
        let ctx = OpContext::builder("shell").allow_shell(true).build();
        let cmd = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let handler = std::sync::Arc::clone(registry.get("shell").unwrap());
        let run_ctx = ctx.clone();
        let task = tokio::spawn(async move { handler.run(&run_ctx, json!({"cmd": cmd})).await });

        // Wait (with a deadline) until the grandchild `sleep` is running.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let grandchild_pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                break pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "grandchild never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, not a synchronization sleep
        };
        ctx.cancellation().cancel();
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.message(), "cancelled");

        // The grandchild, in the same group, is gone (or a zombie about to be reaped).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status =
                std::fs::read_to_string(format!("/proc/{grandchild_pid}/stat")).unwrap_or_default();
            let state = status
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next());
            if status.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "grandchild {grandchild_pid} survived the cancel"
            );
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, not a synchronization sleep
        }
    }

    #[tokio::test]
    async fn cancel_gives_the_program_sigterm_before_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let said_goodbye = dir.path().join("goodbye");
        let registry = Registry::with_builtins(&shell_config(None));
        let ctx = OpContext::builder("shell").allow_shell(true).build();
        // On SIGTERM the program cleans up (writes a file) and exits.
        let cmd = format!(
            "trap 'echo bye > {}; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
            said_goodbye.display(),
            started.display()
        );
        let handler = std::sync::Arc::clone(registry.get("shell").unwrap());
        let run_ctx = ctx.clone();
        let task = tokio::spawn(async move { handler.run(&run_ctx, json!({"cmd": cmd})).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !started.exists() {
            assert!(tokio::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval, not a synchronization sleep
        }
        assert!(
            ctx.cancel_grace() > Duration::ZERO,
            "asked the executor for a grace"
        );
        ctx.cancellation().cancel();
        let error = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(error.message(), "cancelled");
        assert_eq!(
            std::fs::read_to_string(&said_goodbye).unwrap(),
            "bye\n",
            "the program saw SIGTERM and cleaned up"
        );
    }

    #[tokio::test]
    async fn output_past_the_cap_fails_the_op_and_kills_the_program() {
        let config = shell_config(None);
        let registry = <volley_worker::Registry as crate::BuiltinRegistry>::with_builtins(&config);
        let ctx = volley_worker::OpContext::builder("shell")
            .allow_shell(true)
            .max_output(1000)
            .build();
        let shell = registry.get("shell").unwrap();
        // Endless output: only the cap (and the kill) can end it.
        let error = shell
            .run(&ctx, json!({"cmd": "yes volley; echo never >&2"}))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("output exceeded 1000 bytes (max_output)"),
            "{error}"
        );
        assert!(!error.is_retryable());
        // At the cap exactly, it is the output.
        let output = shell
            .run(&ctx, json!({"cmd": "head -c 1000 /dev/zero | tr '\\0' x"}))
            .await
            .unwrap();
        assert_eq!(output.output.len(), 1000);
        // A large stderr is kept as its tail, not whole.
        let output = shell
            .run(
                &ctx,
                json!({"cmd": "head -c 300000 /dev/zero | tr '\\0' e >&2; echo done"}),
            )
            .await
            .unwrap();
        let details = output.details.unwrap();
        assert_eq!(details["stderr"].as_str().unwrap().len(), 64 * 1024);
        assert_eq!(details["stderr_truncated"], true);
    }
}
