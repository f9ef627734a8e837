//! Reading `/proc`: CPU time (user+sys) and peak RSS of the processes a workload involves.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times: from
/// `getconf CLK_TCK` once, 100 (Linux's value everywhere we run) if that fails.
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The times of one `/proc/<pid>/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatTimes {
    /// utime + stime: this process's own CPU.
    pub own_ticks: u64,
    /// cutime + cstime: CPU of its children it has waited for.
    pub children_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> anyhow::Result<StatTimes> {
    let close = text.rfind(')').context("no `)` after the command name")?;
    // After `)`: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u64> {
        let raw = fields
            .get(number - 3)
            .with_context(|| format!("stat has no field {number}"))?;
        raw.parse::<u64>()
            .with_context(|| format!("stat field {number} is not a number: {raw:?}"))
    };
    Ok(StatTimes {
        own_ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

/// The stat times of `pid` (`"self"` for this process).
pub fn stat_times(pid: &str) -> anyhow::Result<StatTimes> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("parsing {path}"))
}

/// CPU seconds (user+sys) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    Ok(stat_times(&pid.to_string())?.own_ticks as f64 / clock_ticks())
}

/// This process's own CPU seconds (the client side of a cluster run).
pub fn self_cpu_seconds() -> anyhow::Result<f64> {
    Ok(stat_times("self")?.own_ticks as f64 / clock_ticks())
}

/// CPU seconds of this process's children that it has waited for
/// (cutime + cstime): how an embedded `volley run` is counted.
pub fn waited_children_cpu_seconds() -> anyhow::Result<f64> {
    Ok(stat_times("self")?.children_ticks as f64 / clock_ticks())
}

/// `VmHWM` (peak resident set) of `pid`, in KiB; `None` once it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&text)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// The named processes a measurement covers; `"bench"` is this process.
#[derive(Clone, Debug, Default)]
pub struct Processes {
    pub named: Vec<(String, u32)>,
}

/// CPU seconds per process name at one moment.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    seconds: BTreeMap<String, f64>,
}

impl Processes {
    /// Reads every process's CPU time now; fails naming a process that is
    /// gone (it crashed: the measurement would be wrong).
    pub fn cpu_snapshot(&self) -> anyhow::Result<CpuSnapshot> {
        let mut seconds = BTreeMap::new();
        for (name, pid) in &self.named {
            let used = cpu_seconds(*pid)
                .with_context(|| format!("reading the CPU time of {name} (pid {pid})"))?;
            seconds.insert(name.clone(), used);
        }
        seconds.insert("bench".to_owned(), self_cpu_seconds()?);
        Ok(CpuSnapshot { seconds })
    }

    /// `VmHWM` of each process (KiB), those still running.
    pub fn peak_rss(&self) -> BTreeMap<String, u64> {
        self.named
            .iter()
            .filter_map(|(name, pid)| peak_rss_kib(*pid).map(|kib| (name.clone(), kib)))
            .collect()
    }
}

impl CpuSnapshot {
    /// CPU seconds used per process between `self` (earlier) and `later`.
    pub fn delta(&self, later: &CpuSnapshot) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut delta = BTreeMap::new();
        for (name, before) in &self.seconds {
            let Some(after) = later.seconds.get(name) else {
                bail!("{name} is missing from the second CPU snapshot");
            };
            delta.insert(name.clone(), (after - before).max(0.0));
        }
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A command name with a space and a `)` in it, as the kernel allows.
        let text = "4242 (tokio) rt) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 40 7 3 20 0 9 0 12345 1000000 500 18446744073709551615";
        let times = parse_stat(text).expect("parses");
        assert_eq!(times.own_ticks, 290);
        assert_eq!(times.children_ticks, 10);
    }

    #[test]
    fn a_truncated_stat_is_an_error() {
        assert!(parse_stat("1 (x) S 1 2 3").is_err());
    }

    #[test]
    fn own_stat_is_readable() {
        let times = stat_times("self").expect("own stat");
        assert!(times.own_ticks < u64::MAX);
        assert!(peak_rss_kib(std::process::id()).is_some());
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status =
            "Name:\tredis-server\nVmPeak:\t  100 kB\nVmHWM:\t    8812 kB\nVmRSS:\t 8000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(8812));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }
}
