//! One measurement (system × workload), the shape shared with the peers' JSON lines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Volley as a cluster: coordinator, two worker processes, redis-server.
pub const VOLLEY: &str = "volley";
/// `volley run`: one process, no Redis.
pub const VOLLEY_EMBEDDED: &str = "volley-embedded";
/// W5: redis-benchmark driving the completion-shaped script.
pub const REDIS_CEILING: &str = "redis-ceiling";

/// A result line: what the peers print (`bench/peers/run_all.sh`) and what
/// the harness records for Volley, plus workload-specific extras
/// (per-process CPU and RSS, Redis memory, …) kept as they come.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub system: String,
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_op: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Record {
    pub fn failed(system: &str, workload: &str, error: &anyhow::Error) -> Record {
        Record {
            system: system.to_owned(),
            workload: workload.to_owned(),
            // `{:#}`: the whole context chain on one line.
            error: Some(format!("{error:#}")),
            ..Record::default()
        }
    }

    /// ops, wall time and CPU seconds per process → ops/s, CPU µs/op, and
    /// the per-process breakdown under `cpu_s_by_process`.
    pub fn measured(
        system: &str,
        workload: &str,
        ops: u64,
        wall: Duration,
        cpu_by_process: &BTreeMap<String, f64>,
    ) -> Record {
        let wall_s = wall.as_secs_f64();
        let cpu_s: f64 = cpu_by_process.values().sum();
        let mut record = Record {
            system: system.to_owned(),
            workload: workload.to_owned(),
            ops: Some(ops),
            wall_s: Some(round(wall_s, 4)),
            ops_per_s: (wall_s > 0.0).then(|| round(ops as f64 / wall_s, 1)),
            cpu_s: Some(round(cpu_s, 3)),
            cpu_us_per_op: (ops > 0).then(|| round(cpu_s * 1e6 / ops as f64, 1)),
            ..Record::default()
        };
        let breakdown: Map<String, Value> = cpu_by_process
            .iter()
            .map(|(name, seconds)| (name.clone(), Value::from(round(*seconds, 3))))
            .collect();
        record.set("cpu_s_by_process", Value::Object(breakdown));
        record
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.to_owned(), value.into());
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.extra.get(key).and_then(Value::as_u64)
    }

    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// `value` rounded to `digits` decimals (JSON stays readable).
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples, in ms.
pub fn percentile_ms(samples: &[Duration], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = samples
        .iter()
        .map(|sample| sample.as_secs_f64() * 1e3)
        .collect();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Some(round(sorted[index], 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_line_round_trips_with_its_extras() {
        let line = r#"{"system":"dask","workload":"W1","ops":20000,"wall_s":4.0,"ops_per_s":5000.0,"cpu_s":8.0,"cpu_us_per_op":400.0,"p50_ms":null,"p90_ms":null,"workers":2}"#;
        let record: Record = serde_json::from_str(line).expect("parses");
        assert_eq!(record.ops_per_s, Some(5000.0));
        assert_eq!(record.p50_ms, None);
        assert_eq!(record.extra.get("workers"), Some(&Value::from(2)));
        let error: Record =
            serde_json::from_str(r#"{"system":"ray","workload":"W3","error":"boom"}"#)
                .expect("parses");
        assert!(!error.is_ok());
    }

    #[test]
    fn measured_computes_rates_and_keeps_the_breakdown() {
        let cpu = BTreeMap::from([("coordinator".to_owned(), 1.5), ("bench".to_owned(), 0.5)]);
        let record = Record::measured(VOLLEY, "W1", 20_000, Duration::from_secs(2), &cpu);
        assert_eq!(record.ops_per_s, Some(10_000.0));
        assert_eq!(record.cpu_s, Some(2.0));
        assert_eq!(record.cpu_us_per_op, Some(100.0));
        assert!(record.extra.contains_key("cpu_s_by_process"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.5), Some(5.0));
        assert_eq!(percentile_ms(&samples, 0.9), Some(9.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }
}
