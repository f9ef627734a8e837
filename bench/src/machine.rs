//! What the numbers were measured on: CPU, cores, RAM, kernel, date, commit, versions.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub ram_bytes: u64,
    pub kernel: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub git_commit: String,
    /// Uncommitted changes in the work tree when the numbers were taken.
    pub git_dirty: bool,
    pub volley_version: String,
    /// The measured binary and when it was built (its mtime): with
    /// `--volley-bin`, it may predate `git_commit`.
    pub volley_bin: String,
    pub volley_bin_built: String,
    pub redis_version: String,
}

impl Machine {
    pub fn describe(repo: &Path, volley_bin: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".to_owned()),
            cores: std::thread::available_parallelism()
                .map(|count| count.get())
                .unwrap_or(1),
            ram_bytes: mem_total_bytes(&meminfo).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_default(),
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            git_commit: command_output(repo, "git", &["rev-parse", "--short=12", "HEAD"])
                .unwrap_or_else(|| "unknown".to_owned()),
            git_dirty: command_output(repo, "git", &["status", "--porcelain"])
                .is_some_and(|changes| !changes.is_empty()),
            volley_version: command_output(repo, &volley_bin.to_string_lossy(), &["--version"])
                .unwrap_or_default(),
            volley_bin: volley_bin.display().to_string(),
            volley_bin_built: std::fs::metadata(volley_bin)
                .and_then(|metadata| metadata.modified())
                .map(|modified| humantime::format_rfc3339_seconds(modified).to_string())
                .unwrap_or_default(),
            redis_version: command_output(repo, "redis-server", &["--version"]).unwrap_or_default(),
        }
    }

    /// One line for the README and the table's heading.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB RAM, Linux {}; {}, commit {}{}",
            self.cpu_model,
            self.cores,
            self.ram_bytes as f64 / (1u64 << 30) as f64,
            self.kernel,
            self.date,
            self.git_commit,
            if self.git_dirty {
                " (with local changes)"
            } else {
                ""
            }
        )
    }
}

fn command_output(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC   7B13 64-Core Processor\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("AMD EPYC 7B13 64-Core Processor")
        );
        assert_eq!(
            mem_total_bytes("MemTotal:       24576000 kB\n"),
            Some(24_576_000 * 1024)
        );
    }
}
