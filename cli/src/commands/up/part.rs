//! One child process of `volley up`: started in its own process group, its
//! output relayed line by line with its role as a prefix, stopped with
//! SIGTERM (then SIGKILL).
//!
//! Why prefixed lines on our stderr rather than log files: `volley up` is
//! for trying Volley in one terminal, where the first thing a user needs to
//! see is why a part failed (Redis refusing a port, a worker refusing its
//! root) — right there, interleaved in the order it happened, the way
//! `docker compose up` shows it. `VOLLEY_LOG=warn volley up` quiets the
//! coordinator and workers; `2>file` keeps it all. Stdout stays free for
//! the one machine-readable "ready" line.

use std::io::Write;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::task::TaskTracker;

/// What a part is, which decides when it stops: workers first, then the
/// coordinator, Redis last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Redis,
    Coordinator,
    Worker,
}

pub struct Part {
    pub kind: PartKind,
    /// `redis`, `coordinator`, `worker-1`, …: the prefix of its lines.
    pub role: String,
    child: Child,
    pid: u32,
    /// Held and never written. The coordinator and workers stop when their
    /// stdin ends: if `volley up` dies, even by SIGKILL, the kernel closes
    /// this end and they stop by themselves instead of lingering.
    _stdin: Option<ChildStdin>,
    exited: Option<ExitStatus>,
}

impl Part {
    /// Starts `command` as `role`. With `hold_stdin`, its stdin is a pipe
    /// this process keeps open (see `_stdin`); otherwise it reads nothing.
    pub fn spawn(
        kind: PartKind,
        role: String,
        mut command: Command,
        hold_stdin: bool,
        relays: &TaskTracker,
    ) -> std::io::Result<Part> {
        command
            .stdin(if hold_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // If this process is dropped without a clean stop (a panic),
            // tokio kills the child rather than leaving it behind.
            .kill_on_drop(true);
        // Its own process group: Ctrl-C in the terminal reaches only
        // `volley up`, which then stops the parts in order (workers drain
        // before the coordinator and Redis go), instead of reaching every
        // part at once.
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            relay(relays, role.clone(), stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            relay(relays, role.clone(), stderr);
        }
        tracing::debug!(%role, pid, "started");
        Ok(Part {
            kind,
            role,
            child,
            pid,
            _stdin: stdin,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_running(&self) -> bool {
        self.exited.is_none()
    }

    /// Waits until the part exits and remembers how. Cancel-safe (tokio's
    /// `Child::wait` is), so it can sit in a `select!`.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(error) => {
                // Cannot wait (already reaped?): count it as gone.
                tracing::warn!(role = %self.role, %error, "cannot wait for the process");
                failed_status()
            }
        };
        self.exited = Some(status);
        status
    }

    /// Asks the part to stop: SIGTERM (a worker then drains).
    pub fn terminate(&mut self) {
        if !self.is_running() {
            return;
        }
        #[cfg(unix)]
        {
            let Some(pid) = i32::try_from(self.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                return;
            };
            if let Err(error) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
                tracing::debug!(role = %self.role, %error, "SIGTERM failed (already gone?)");
            }
        }
        #[cfg(not(unix))]
        self.kill();
    }

    /// Stops the part at once: SIGKILL.
    pub fn kill(&mut self) {
        if self.is_running()
            && let Err(error) = self.child.start_kill()
        {
            tracing::debug!(role = %self.role, %error, "kill failed (already gone?)");
        }
    }
}

/// "exit code 1", "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

#[cfg(unix)]
fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(1 << 8)
}

#[cfg(not(unix))]
fn failed_status() -> ExitStatus {
    use std::os::windows::process::ExitStatusExt;
    ExitStatus::from_raw(1)
}

/// Copies `pipe` to our stderr line by line, each line as `[role] line`,
/// until the pipe closes (the part exited).
fn relay(relays: &TaskTracker, role: String, pipe: impl AsyncRead + Unpin + Send + 'static) {
    relays.spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    // Not `eprintln!`, which panics once stderr is gone
                    // (`volley up 2>&1 | head`): a lost line is no reason
                    // to stop relaying.
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "[{role}] {}",
                        text.trim_end_matches(['\n', '\r'])
                    );
                }
            }
        }
    });
}
