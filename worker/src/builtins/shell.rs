//! `shell`: `sh -c cmd` in its own process group, killed as a group when the op is cancelled or times out.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use volley_kinds::ShellArgs;

use super::BuiltinState;
use crate::handler::{HandlerError, OpContext, OpOutput};

/// Stderr kept in the op's details: its last 64 KiB, where the error usually is.
const STDERR_LIMIT_BYTES: usize = 64 * 1024;

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
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(&args.cmd);
    match (state.optional_root()?, &args.cwd) {
        (Some(root), Some(cwd)) => {
            command.current_dir(root.resolve(cwd)?);
        }
        (Some(root), None) => {
            command.current_dir(root.path());
        }
        (None, Some(cwd)) => {
            command.current_dir(cwd);
        }
        (None, None) => {}
    }
    command
        .envs(&args.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a cancel kills the children `sh` started too.
        .process_group(0)
        .kill_on_drop(true);

    let mut child = command
        .spawn()
        .map_err(|error| HandlerError::retry(format!("shell could not start sh: {error}")))?;
    // Armed until the child is reaped: dropping this future (cancel, timeout)
    // kills the whole group.
    let mut group_guard = ProcessGroupGuard {
        process_group_id: child.id(),
        armed: true,
    };

    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let read_stdout = async {
        let mut buffer = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            pipe.read_to_end(&mut buffer).await?;
        }
        Ok::<_, std::io::Error>(buffer)
    };
    let read_stderr = async {
        let mut buffer = Vec::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            pipe.read_to_end(&mut buffer).await?;
        }
        Ok::<_, std::io::Error>(buffer)
    };
    let (stdout, stderr, status) = tokio::select! {
        outcome = async { tokio::try_join!(read_stdout, read_stderr, child.wait()) } => {
            outcome.map_err(|error| HandlerError::retry(format!("shell i/o failed: {error}")))?
        }
        () = ctx.cancellation().cancelled() => return Err(HandlerError::retry("cancelled")),
    };
    group_guard.armed = false;

    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr_truncated = stderr.len() > STDERR_LIMIT_BYTES;
    let stderr_tail = &stderr[stderr.len().saturating_sub(STDERR_LIMIT_BYTES)..];
    let stderr = String::from_utf8_lossy(stderr_tail).into_owned();
    let details = serde_json::json!({
        "exit_code": status.code(),
        "stderr": stderr,
        "stderr_truncated": stderr_truncated,
    });
    if status.success() {
        return Ok(OpOutput {
            output: stdout,
            details: Some(details),
        });
    }
    let last_stderr_line = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim();
    let ended = match status.code() {
        Some(code) => format!("shell exited with code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!(
                "shell was killed by signal {}",
                status.signal().unwrap_or_default()
            )
        }
    };
    let message = if last_stderr_line.is_empty() {
        ended
    } else {
        format!("{ended}: {last_stderr_line}")
    };
    // A command may fail for reasons another attempt does not share; the op's
    // `attempts` bounds how often.
    Err(HandlerError::retry(message).with_details(details))
}

/// Kills the child's process group on drop unless disarmed.
struct ProcessGroupGuard {
    process_group_id: Option<u32>,
    armed: bool,
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(process_group_id) = self.process_group_id.and_then(|id| i32::try_from(id).ok())
        {
            kill_process_group(process_group_id);
        }
    }
}

#[allow(unsafe_code)]
fn kill_process_group(process_group_id: i32) {
    if process_group_id <= 1 {
        return; // never signal "every process" or init's group
    }
    // SAFETY: killpg takes plain integers and touches no memory of ours; the
    // group is the one `process_group(0)` created for our child.
    let result = unsafe { libc::killpg(process_group_id, libc::SIGKILL) };
    if result != 0 {
        tracing::debug!(process_group_id, error = %std::io::Error::last_os_error(), "killpg failed (group already gone?)");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::test_support::run_kind;
    use crate::handler::OpContext;
    use crate::registry::{BuiltinConfig, Registry};

    fn shell_config(root: Option<&std::path::Path>) -> BuiltinConfig {
        BuiltinConfig {
            root: root.map(|path| path.to_path_buf()),
            allow_shell: true,
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
}
