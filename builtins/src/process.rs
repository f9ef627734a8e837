//! The process runner `shell` and `agent` share: `sh -c cmd` in its own process group; a cancel sends the group SIGTERM, then SIGKILL after a grace, and a timeout kills it at once.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::BuiltinState;
use crate::op_processes::{self, GroupSignal, TERMINATE_GRACE};
use volley_worker::{HandlerError, OpContext, OpOutput};

/// Stderr kept in the op's details: its last 64 KiB, where the error usually is.
const STDERR_LIMIT_BYTES: usize = 64 * 1024;

/// A command for `sh -c`, as `shell` and `agent` run it.
pub(super) struct HostProgram<'a> {
    /// The kind running it, named in its errors ("shell exited with code 3").
    pub(super) kind: &'static str,
    pub(super) cmd: &'a str,
    /// Under the worker's root when it has one.
    pub(super) cwd: Option<&'a str>,
    /// Added to the worker's environment, in order (a later one wins).
    pub(super) env: Vec<(OsString, OsString)>,
}

/// A `cwd` that is not a directory fails the op naming the directory: left
/// to the spawn, the error would blame `sh` ("could not start sh: No such
/// file or directory"). Permanent: another try on this worker finds the
/// same tree.
fn check_cwd(cwd: &str, resolved: &std::path::Path, against: &str) -> Result<(), HandlerError> {
    if resolved.is_dir() {
        return Ok(());
    }
    let what = if resolved.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    Err(HandlerError::permanent(format!(
        "cwd `{cwd}` (resolved to {}) {what} on this worker (a relative cwd resolves against {against})",
        resolved.display()
    )))
}

/// Runs `program` to completion: stdout is the output, a non-zero exit fails
/// with its code and the last stderr line, stderr goes in the details. The
/// caller checks `allow_shell`.
pub(super) async fn run_host_program(
    state: &BuiltinState,
    ctx: &OpContext,
    program: HostProgram<'_>,
) -> Result<OpOutput, HandlerError> {
    let kind = program.kind;
    // `${secret.NAME}` markers become the worker's values here, and nowhere
    // else; each value is masked in everything the op reports.
    let mut revealed: Vec<String> = Vec::new();
    let mut env = Vec::with_capacity(program.env.len());
    for (name, value) in program.env {
        match value
            .to_str()
            .and_then(|text| text.strip_prefix(volley_kinds::template::SECRET_MARKER))
        {
            Some(secret) => {
                let Some(resolved) = state.secrets.get(secret) else {
                    return Err(HandlerError::permanent(format!(
                        "secret `{secret}` is not on this worker: give it --secret-dir DIR with a file named {secret}, or VOLLEY_SECRET_{secret}"
                    )));
                };
                revealed.push(resolved.clone());
                env.push((name, resolved.into()));
            }
            None => env.push((name, value)),
        }
    }
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(program.cmd);
    match (state.optional_root()?, program.cwd) {
        (Some(root), Some(cwd)) => {
            let resolved = root.resolve(cwd)?;
            check_cwd(cwd, &resolved, "the worker's --root")?;
            command.current_dir(resolved);
        }
        (Some(root), None) => {
            command.current_dir(root.path());
        }
        (None, Some(cwd)) => {
            let resolved = std::path::absolute(cwd).unwrap_or_else(|_| cwd.into());
            check_cwd(cwd, &resolved, "the worker's own directory")?;
            command.current_dir(cwd);
        }
        (None, None) => {}
    }
    // The worker's own secrets never reach a program (but for the ones the
    // op asked for, set from `env` below).
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with(crate::secrets::SECRET_ENV_PREFIX))
        {
            command.env_remove(&name);
        }
    }
    command
        // The op's trace context first: the op's own `env` may override it.
        .envs(volley_worker::tracing_ctx::child_env())
        .envs(env)
        // The worker's own credentials never reach an op's program...
        .env_remove("VOLLEY_TOKEN_FILE")
        .env_remove("VOLLEY_ADMIN_TOKEN_FILE")
        .env_remove("VOLLEY_REDIS_PASSWORD_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a cancel kills the children `sh` started too.
        .process_group(0)
        .kill_on_drop(true);
    // ...only the attempt's capability does, set last so an op's `env`
    // cannot pose as another.
    if ctx.token().is_empty() {
        command.env_remove("VOLLEY_TOKEN");
    } else {
        command.env("VOLLEY_TOKEN", ctx.token());
    }
    die_with_worker(&mut command);

    let mut child = command
        .spawn()
        .map_err(|error| HandlerError::retry(format!("{kind} could not start sh: {error}")))?;
    // Armed until the child is reaped: dropping this future (cancel, timeout)
    // kills the whole group.
    let process_group_id = child.id().and_then(|id| i32::try_from(id).ok());
    let mut group_guard = ProcessGroupGuard::new(process_group_id);
    // A cancelled program gets SIGTERM and TERMINATE_GRACE to end: the
    // executor waits that long (and a little more) before it drops this.
    ctx.ask_cancel_grace(TERMINATE_GRACE + Duration::from_millis(500));

    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let max_output = ctx.max_output();
    // Both read as they come, neither held whole: stdout up to the op's
    // output cap (past it the program is killed: its whole group, by the
    // guard), stderr as its last STDERR_LIMIT_BYTES.
    let read_stdout = async {
        let mut buffer = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let mut chunk = vec![0_u8; 64 * 1024];
            loop {
                let read = pipe.read(&mut chunk).await?;
                if read == 0 {
                    break;
                }
                if buffer.len() + read > max_output {
                    // Ends the join below at once (the other reads and the
                    // wait are dropped; the guard kills the program).
                    return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
        }
        Ok::<_, std::io::Error>(buffer)
    };
    let read_stderr = async {
        let mut tail = std::collections::VecDeque::new();
        let mut total = 0_usize;
        if let Some(pipe) = stderr_pipe.as_mut() {
            let mut chunk = vec![0_u8; 64 * 1024];
            loop {
                let read = pipe.read(&mut chunk).await?;
                if read == 0 {
                    break;
                }
                total += read;
                tail.extend(&chunk[..read]);
                let excess = tail.len().saturating_sub(STDERR_LIMIT_BYTES);
                tail.drain(..excess);
            }
        }
        Ok::<_, std::io::Error>((Vec::from(tail), total > STDERR_LIMIT_BYTES))
    };
    let ended = tokio::select! {
        outcome = async { tokio::try_join!(read_stdout, read_stderr, child.wait()) } => Some(outcome),
        () = ctx.cancellation().cancelled() => None,
    };
    let (stdout, (stderr_tail, stderr_truncated), status) = match ended {
        Some(Ok(outcome)) => outcome,
        Some(Err(error)) if error.kind() == std::io::ErrorKind::FileTooLarge => {
            return Err(volley_worker::executor::output_exceeded(kind, max_output));
        }
        Some(Err(error)) => return Err(HandlerError::retry(format!("{kind} i/o failed: {error}"))),
        None => {
            // Cancelled: the whole group gets SIGTERM, so programs may clean
            // up; once `sh` has ended, or after the grace, the guard SIGKILLs
            // what is left of the group.
            if let Some(group) = process_group_id {
                op_processes::signal_group(group, GroupSignal::Terminate);
            }
            let _ = tokio::time::timeout(TERMINATE_GRACE, child.wait()).await;
            return Err(HandlerError::retry("cancelled"));
        }
    };
    group_guard.disarm();

    // Masked before anything leaves: output, error and details are built
    // from these.
    let stdout = crate::secrets::mask(&String::from_utf8_lossy(&stdout), &revealed);
    let stderr = crate::secrets::mask(&String::from_utf8_lossy(&stderr_tail), &revealed);
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
        Some(code) => format!("{kind} exited with code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!(
                "{kind} was killed by signal {}",
                status.signal().unwrap_or_default()
            )
        }
    };
    let message = if last_stderr_line.is_empty() {
        ended
    } else {
        format!("{ended}: {last_stderr_line}")
    };
    // A failed op has no output, but what its program printed before it
    // failed is what one reads to see why (a test runner's report):
    // kept in the details, under the same cap as an output.
    let mut details = details;
    details["stdout"] = serde_json::Value::String(stdout);
    // A command may fail for reasons another attempt does not share; the op's
    // `attempts` bounds how often.
    Err(HandlerError::retry(message).with_details(details))
}

/// Kills the child's process group on drop unless disarmed, and keeps the
/// group in [`op_processes`] while it may be running.
struct ProcessGroupGuard {
    process_group_id: Option<i32>,
    armed: bool,
}

impl ProcessGroupGuard {
    fn new(process_group_id: Option<i32>) -> Self {
        if let Some(group) = process_group_id {
            op_processes::register(group);
        }
        Self {
            process_group_id,
            armed: true,
        }
    }

    /// The program was reaped: its group is not ours to kill any more.
    fn disarm(&mut self) {
        self.armed = false;
        if let Some(group) = self.process_group_id {
            op_processes::unregister(group);
        }
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(group) = self.process_group_id {
            op_processes::signal_group(group, GroupSignal::Kill);
            op_processes::unregister(group);
        }
    }
}

/// A worker killed with SIGKILL cannot kill its children: the kernel does it
/// (`PR_SET_PDEATHSIG`), so an op whose lease moved elsewhere does not keep
/// running — and writing — as an orphan.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_worker(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl, which is async-signal-safe; it touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_worker(_command: &mut tokio::process::Command) {}
