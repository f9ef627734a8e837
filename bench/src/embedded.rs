//! Embedded Volley: the same batches through `volley run FILE --output json`, one process, no Redis.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use volley_client::v1;

use crate::cluster::{LogDir, log_tail};
use crate::procs::{peak_rss_kib, waited_children_cpu_seconds};
use crate::workloads::batch_file_json;

/// How often the child's `VmHWM` is read while it runs (the last value read
/// is its peak: the kernel's high-water mark only grows).
const RSS_POLL: Duration = Duration::from_millis(20);

/// Where `volley run` works: its batch files, its cwd (host kinds are
/// confined to it; no-ops touch nothing) and its stderr.
pub struct Embedded {
    volley_bin: PathBuf,
    workers: usize,
    slots: u32,
    dir: LogDir,
}

/// One `volley run`.
#[derive(Debug)]
pub struct EmbeddedRun {
    pub ops: u64,
    /// The report's `wall_ms`: submit → finished inside the process.
    pub report_wall_ms: u64,
    /// Spawn → exit, process start and the JSON report included.
    pub process_wall: Duration,
    /// The child's user+sys CPU (this process's cutime+cstime delta).
    pub cpu_s: f64,
    pub peak_rss_kib: Option<u64>,
}

/// The part of `volley run --output json` the harness checks.
#[derive(Deserialize)]
struct Report {
    state: String,
    wall_ms: u64,
    total: u64,
    succeeded: u64,
    #[serde(default)]
    error: String,
}

impl Embedded {
    pub fn new(volley_bin: &Path, workers: usize, slots: u32) -> anyhow::Result<Embedded> {
        Ok(Embedded {
            volley_bin: volley_bin.to_path_buf(),
            workers,
            slots,
            dir: LogDir::create()?,
        })
    }

    /// Writes `batch` as a JSON batch file and returns its path.
    pub fn write_batch(&self, batch: &v1::Batch) -> anyhow::Result<PathBuf> {
        let path = self.dir.path.join(format!("{}.json", batch.name));
        std::fs::write(&path, batch_file_json(batch).to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn command(&self, file: &Path) -> anyhow::Result<(Command, PathBuf)> {
        let log = self.dir.path.join("volley-run.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&self.volley_bin);
        command
            .arg("run")
            .arg(file)
            .arg("--output")
            .arg("json")
            .arg("--workers")
            .arg(self.workers.to_string())
            .arg("--slots")
            .arg(self.slots.to_string())
            .current_dir(&self.dir.path)
            .env("VOLLEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        Ok((command, log))
    }

    /// Runs one batch file, polling the child's peak RSS until it exits.
    pub async fn run(&self, file: &Path, timeout: Duration) -> anyhow::Result<EmbeddedRun> {
        let (mut command, log) = self.command(file)?;
        let cpu_before = waited_children_cpu_seconds()?;
        let start = Instant::now();
        let mut child = command.spawn().context("spawning volley run")?;
        let pid = child.id().context("volley run has no pid")?;
        let mut stdout = child.stdout.take().context("volley run's stdout")?;
        // Drained concurrently: a large report would fill the pipe and
        // block the child before it exits.
        let reader = tokio::spawn(async move {
            let mut text = String::new();
            stdout.read_to_string(&mut text).await.map(|_| text)
        });
        let mut peak = None;
        let status = loop {
            if let Some(kib) = peak_rss_kib(pid) {
                peak = Some(kib);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.start_kill();
                let _ = child.wait().await;
                reader.abort();
                bail!("timed out after {timeout:?}");
            }
            tokio::time::sleep(RSS_POLL).await;
        };
        let process_wall = start.elapsed();
        let cpu_s = waited_children_cpu_seconds()? - cpu_before;
        let text = reader
            .await
            .context("reading volley run's report")?
            .context("reading volley run's report")?;
        let report = check_report(status, &text, &log)?;
        Ok(EmbeddedRun {
            ops: report.total,
            report_wall_ms: report.wall_ms,
            process_wall,
            cpu_s,
            peak_rss_kib: peak,
        })
    }

    /// W4: `count` runs of a one-op file one after another; each latency is
    /// spawn → exit (process start-up included: that is the round trip of
    /// an embedded batch). Returns the latencies, the total wall time and
    /// the children's CPU seconds.
    pub async fn round_trips(
        &self,
        file: &Path,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Duration, f64)> {
        let cpu_before = waited_children_cpu_seconds()?;
        let start = Instant::now();
        let mut latencies = Vec::with_capacity(count);
        for _ in 0..count {
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} ({} of {count} round trips done)",
                    latencies.len()
                );
            }
            let (mut command, log) = self.command(file)?;
            let sent = Instant::now();
            let output = command.output().await.context("running volley run")?;
            latencies.push(sent.elapsed());
            let text = String::from_utf8_lossy(&output.stdout);
            check_report(output.status, &text, &log)?;
        }
        let wall = start.elapsed();
        let cpu_s = waited_children_cpu_seconds()? - cpu_before;
        Ok((latencies, wall, cpu_s))
    }
}

fn check_report(
    status: std::process::ExitStatus,
    text: &str,
    log: &Path,
) -> anyhow::Result<Report> {
    let report: Report = serde_json::from_str(text).with_context(|| {
        format!(
            "volley run exited with {status} without a JSON report; its stderr ends:\n{}",
            log_tail(log)
        )
    })?;
    if !status.success() || report.state != "succeeded" || report.succeeded != report.total {
        bail!(
            "volley run exited with {status}: batch {}, {} of {} succeeded {}",
            report.state,
            report.succeeded,
            report.total,
            report.error
        );
    }
    Ok(report)
}
