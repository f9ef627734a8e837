//! W5, the Redis ceiling: redis-benchmark pipelining EVALSHA of a script shaped like Volley's completion.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::Command;
use volley_testkit::RedisServer;

use crate::procs::{cpu_seconds, waited_children_cpu_seconds};
use crate::record::{REDIS_CEILING, Record, round};

/// The script (see its header for what it mirrors).
pub const SHAPED_SCRIPT: &str = include_str!("../lua/completion_shaped.lua");
/// Slices W5 measures: one completion per call (the per-op cost, every
/// per-call command paid by one op) and 64 (a worker's slots finishing
/// together: the most one worker's result message carries here).
pub const SLICES: [usize; 2] = [1, 64];

/// Redis commands one call of [`SHAPED_SCRIPT`] runs for `slice` completions.
pub fn commands_per_call(slice: usize) -> usize {
    20 + 2 * slice
}
/// Requests in flight per connection.
pub const PIPELINE: u32 = 16;
/// redis-benchmark's connections (its default).
pub const CONNECTIONS: u32 = 50;
/// Distinct batch prefixes the requests spread over (`-r`).
const KEYSPACE: u32 = 10_000;

/// Runs W5 on a redis-server of its own (so no other workload's keys are
/// in it): `requests` calls of `slice` completions each. The ceiling is in
/// completions/s. CPU: redis-server plus redis-benchmark, its client.
pub async fn redis_ceiling(
    requests: usize,
    slice: usize,
    timeout: Duration,
) -> anyhow::Result<Record> {
    let server = RedisServer::start().context("starting redis-server")?;
    let redis_pid = server.pid().context("redis-server has no pid")?;
    let mut connection = redis::Client::open(server.url().as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis-server")?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SHAPED_SCRIPT)
        .query_async(&mut connection)
        .await
        .context("SCRIPT LOAD of the shaped script")?;
    // One call by hand first: a script error is clear here, whereas
    // redis-benchmark would just time error replies.
    let probe: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("volley:{b:probe}:")
        .arg(script_args("probe", slice))
        .query_async(&mut connection)
        .await
        .context("a probe call of the shaped script")?;
    if probe != slice as i64 {
        bail!("the shaped script's probe call returned {probe}, not its slice {slice}");
    }

    let redis_cpu_before = cpu_seconds(redis_pid)?;
    let children_before = waited_children_cpu_seconds()?;
    let start = Instant::now();
    let output = tokio::time::timeout(
        timeout,
        Command::new("redis-benchmark")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(server.port().to_string())
            .arg("-n")
            .arg(requests.to_string())
            .arg("-c")
            .arg(CONNECTIONS.to_string())
            .arg("-P")
            .arg(PIPELINE.to_string())
            .arg("-r")
            .arg(KEYSPACE.to_string())
            .arg("--csv")
            .arg("EVALSHA")
            .arg(&sha)
            .arg("1")
            .arg("volley:{b:__rand_int__}:")
            .args(script_args("__rand_int__", slice))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("redis-benchmark timed out after {timeout:?}"))?
    .context("running redis-benchmark (is it on PATH?)")?;
    let wall = start.elapsed();
    let children_cpu = waited_children_cpu_seconds()? - children_before;
    let redis_cpu = cpu_seconds(redis_pid)? - redis_cpu_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "redis-benchmark exited with {}: {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let requests_per_s = parse_csv_rps(&stdout)
        .with_context(|| format!("no requests/s in redis-benchmark's output: {stdout:?}"))?;

    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .context("INFO commandstats")?;
    let (calls, failed) = parse_evalsha_stats(&stats).context("no cmdstat_evalsha")?;
    if failed > 0 || calls < requests as u64 {
        bail!("the shaped script ran {calls} times with {failed} failures for {requests} requests");
    }

    let cpu = BTreeMap::from([
        ("redis-server".to_owned(), redis_cpu),
        ("redis-benchmark".to_owned(), children_cpu),
    ]);
    let completions = requests * slice;
    let mut record = Record::measured(REDIS_CEILING, "W5", completions as u64, wall, &cpu);
    record.ops_per_s = Some(round(requests_per_s * slice as f64, 1));
    record.set("slice", slice);
    record.set("requests", requests);
    record.set("requests_per_s", round(requests_per_s, 1));
    record.set("commands_per_call", commands_per_call(slice));
    record.set(
        "commands_per_completion",
        round(commands_per_call(slice) as f64 / slice as f64, 2),
    );
    record.set("pipeline", PIPELINE);
    record.set("connections", CONNECTIONS);
    record.set(
        "redis_server_cpu_us_per_op",
        Value::from(round(redis_cpu * 1e6 / completions as f64, 2)),
    );
    Ok(record)
}

/// ARGV of the shaped script, laid out as complete.lua's: channel, batch
/// id, now, memory bell, change cap, seed, count, then 12 fields for each
/// of `slice` successful no-op completions (ops 1..=slice, attempt 1).
fn script_args(batch: &str, slice: usize) -> Vec<String> {
    let now = "1700000000000";
    let mut args: Vec<String> = [
        "volley:doorbell",
        batch,
        now,
        "volley:memory-bell",
        "1000",
        "42",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    args.push(slice.to_string());
    for index in 1..=slice {
        args.push(index.to_string());
        for field in ["1", "ok", "", "", "", "w1", now, "0", "0", "", "0"] {
            args.push(field.to_owned());
        }
    }
    args
}

/// `redis-benchmark --csv`: a header line, then `"<test>","<rps>",…`.
fn parse_csv_rps(output: &str) -> Option<f64> {
    output
        .lines()
        .filter(|line| !line.starts_with("\"test\""))
        .find_map(|line| {
            let fields: Vec<&str> = line.split("\",\"").collect();
            fields.get(1)?.trim_matches('"').parse::<f64>().ok()
        })
}

/// `cmdstat_evalsha:calls=N,…,failed_calls=M` → (N, M).
fn parse_evalsha_stats(stats: &str) -> Option<(u64, u64)> {
    let line = stats
        .lines()
        .find_map(|line| line.trim().strip_prefix("cmdstat_evalsha:"))?;
    let field = |name: &str| -> Option<u64> {
        line.split(',')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
    };
    Some((field("calls")?, field("failed_calls").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_second_come_from_the_csv_line() {
        let output = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                      \"EVALSHA abc 1 volley:{b:__rand_int__}: x\",\"45045.05\",\"8.1\",\"1.2\"\n";
        assert_eq!(parse_csv_rps(output), Some(45045.05));
        assert_eq!(parse_csv_rps("\"test\",\"rps\"\n"), None);
    }

    #[test]
    fn evalsha_stats_are_parsed() {
        let stats = "# Commandstats\r\ncmdstat_script|load:calls=1,usec=20\r\n\
                     cmdstat_evalsha:calls=5001,usec=90000,usec_per_call=18.0,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(parse_evalsha_stats(stats), Some((5001, 0)));
    }

    #[test]
    fn the_header_states_the_command_count() {
        // Two call sites run once per completion (XADD, HINCRBY); the rest once.
        let sites = SHAPED_SCRIPT.matches("redis.call(").count();
        assert_eq!(commands_per_call(0), sites - 2);
        assert!(SHAPED_SCRIPT.contains("Commands per call: 20 + 2 × count"));
        assert_eq!(script_args("b", 3).len(), 7 + 3 * 12);
    }
}
