//! The peers (Dask, Celery, Ray): `bench/peers/setup.sh`, then `bench/peers/run_all.sh`'s JSON lines.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::record::Record;

/// The whole peers run (each run inside has its own, shorter bound).
const PEERS_TIMEOUT: Duration = Duration::from_secs(90 * 60);
/// Installing the venv the first time (pip, Ray's wheel is large).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Kills a child's whole process group on drop (SIGTERM, then SIGKILL a
/// moment later): the peers' scripts start Python processes that start
/// schedulers and workers of their own, and `kill_on_drop` reaches only
/// the script. `kill(1)`, since the workspace denies `unsafe`.
struct GroupGuard {
    pgid: u32,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let group = format!("-{}", self.pgid);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a script in its own process group; its stdout lines go to
/// `on_line`, its stderr passes through.
async fn run_script(
    script: &Path,
    args: &[&str],
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<()> {
    let mut child = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", script.display()))?;
    let _group = GroupGuard {
        pgid: child.id().context("the script has no pid")?,
    };
    let stdout = child.stdout.take().context("the script's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let finished = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            on_line(&line);
        }
        child.wait().await
    })
    .await;
    let status = match finished {
        Ok(status) => status?,
        Err(_) => bail!("{} timed out after {timeout:?}", script.display()),
    };
    if !status.success() {
        bail!("{} exited with {status}", script.display());
    }
    Ok(())
}

/// Sets up the peers' venv and runs every peer workload. A peer that
/// fails is an error record (from run_all.sh itself, or here for a line
/// that is not JSON), never a failed harness.
pub async fn run_peers(repo: &Path) -> anyhow::Result<Vec<Record>> {
    let dir = repo.join("bench/peers");
    let setup = dir.join("setup.sh");
    let run_all = dir.join("run_all.sh");
    for script in [&setup, &run_all] {
        if !script.exists() {
            bail!("{} is missing", script.display());
        }
    }
    eprintln!("--- peers: setting up the venv ({})", setup.display());
    run_script(&setup, &[], SETUP_TIMEOUT, |line| eprintln!("{line}")).await?;
    eprintln!("--- peers: running {}", run_all.display());
    let mut records = Vec::new();
    let result = run_script(&run_all, &[], PEERS_TIMEOUT, |line| {
        if let Some(record) = parse_line(line) {
            eprintln!(
                "    {} {}: {}",
                record.system,
                record.workload,
                record
                    .error
                    .clone()
                    .or_else(|| record.ops_per_s.map(|rate| format!("{rate:.0} ops/s")))
                    .unwrap_or_default()
            );
            records.push(record);
        }
    })
    .await;
    if let Err(error) = result {
        // Keep what was printed before the script failed.
        records.push(Record::failed("peers", "*", &error));
    }
    Ok(records)
}

/// One line of run_all.sh: a result or error object; anything else is
/// logged and dropped.
fn parse_line(line: &str) -> Option<Record> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return None;
    }
    match serde_json::from_str::<Record>(trimmed) {
        Ok(record) if !record.system.is_empty() && !record.workload.is_empty() => Some(record),
        _ => {
            eprintln!("    (ignored a line of run_all.sh that is not a result: {trimmed})");
            None
        }
    }
}

/// Versions of the peer packages in the venv (empty when there is none).
pub fn versions(repo: &Path) -> Map<String, Value> {
    let python = repo.join("target/bench-venv/bin/python");
    let program = "import json, importlib.metadata as m\n\
                   out = {}\n\
                   for name in ['dask', 'distributed', 'celery', 'ray', 'redis']:\n    \
                       try: out[name] = m.version(name)\n    \
                       except Exception: pass\n\
                   print(json.dumps(out))";
    std::process::Command::new(python)
        .args(["-c", program])
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|output| serde_json::from_slice::<Map<String, Value>>(&output.stdout).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_errors_parse_and_noise_is_dropped() {
        let result = parse_line(r#"{"system":"celery","workload":"W4","ops":200,"wall_s":1.0,"ops_per_s":200.0,"cpu_s":0.5,"cpu_us_per_op":2500.0,"p50_ms":4.2,"p90_ms":6.0}"#)
            .expect("a result");
        assert_eq!(result.p50_ms, Some(4.2));
        let error = parse_line(r#"{"system":"ray","workload":"W1","error":"ray did not start"}"#)
            .expect("an error record");
        assert_eq!(error.error.as_deref(), Some("ray did not start"));
        assert!(parse_line("Collecting dask...").is_none());
        assert!(parse_line("   ").is_none());
    }
}
