//! `volley up` as a user runs it: a real redis-server, coordinator and
//! workers as its children; a batch submitted to it; SIGTERM stops them all
//! (no orphans, checked by pid); a part that dies is named; clear errors
//! before anything starts; a SIGKILLed `volley up` leaves no coordinator or
//! workers behind.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Child;

const DEADLINE: Duration = Duration::from_secs(60);
const READY_PREFIX: &str = "volley up: ready at ";

/// A running `volley up`, its stderr collected as it comes.
struct Up {
    child: Child,
    pid: u32,
    url: String,
    stderr: Arc<Mutex<String>>,
    /// Ends at the end of stderr: awaited before reading the last lines.
    stderr_read: Option<tokio::task::JoinHandle<()>>,
}

impl Up {
    /// Starts `volley up` with `args` and waits for its ready line.
    async fn start(args: &[&str]) -> Up {
        let mut child = common::volley()
            .arg("up")
            .args(args)
            .env("VOLLEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("volley up starts");
        let pid = child.id().expect("a pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        let stderr_read = tokio::spawn(async move {
            let mut buffer = [0_u8; 4096];
            while let Ok(read) = stderr_pipe.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                collected
                    .lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no ready line in time; stderr:\n{}",
                    stderr.lock().expect("stderr")
                )
            })
            .expect("read stdout")
            .unwrap_or_else(|| {
                panic!(
                    "volley up closed stdout without a ready line; stderr:\n{}",
                    stderr.lock().expect("stderr")
                )
            });
        let url = line
            .strip_prefix(READY_PREFIX)
            .unwrap_or_else(|| panic!("not a ready line: {line}"))
            .to_owned();
        Up {
            child,
            pid,
            url,
            stderr,
            stderr_read: Some(stderr_read),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("volley up did not exit; stderr:\n{}", self.stderr()))
            .expect("wait");
        // The process is gone, but its last lines may still be in the pipe.
        if let Some(stderr_read) = self.stderr_read.take() {
            let _ = tokio::time::timeout(DEADLINE, stderr_read).await;
        }
        status.code()
    }
}

/// The processes whose parent is `parent`: (pid, command line).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((_, parent_pid)) = stat_of(pid) else {
            continue;
        };
        if parent_pid == parent {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            children.push((pid, cmdline));
        }
    }
    children
}

/// State letter and parent pid from `/proc/PID/stat`.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: parse after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Gone: no such process, or a zombie nobody reaped yet (it runs nothing).
fn is_gone(pid: u32) -> bool {
    !matches!(stat_of(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

async fn wait_until_gone(pids: &[(u32, String)]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let left: Vec<_> = pids.iter().filter(|(pid, _)| !is_gone(*pid)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_batch_and_sigterm_stops_every_part() {
    let root = tempfile::tempdir().expect("temp dir");
    let root_text = root.path().to_string_lossy().into_owned();
    let mut up = Up::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--slots",
        "2",
        "--allow-shell",
        "--root",
        &root_text,
    ])
    .await;
    assert!(up.url.starts_with("http://127.0.0.1:"), "{}", up.url);
    assert!(
        !up.url.ends_with(":0"),
        "port 0 became a real port: {}",
        up.url
    );
    let parts = children_of(up.pid);
    let count = |word: &str| {
        parts
            .iter()
            .filter(|(_, cmdline)| cmdline.contains(word))
            .count()
    };
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert_eq!(count("redis-server"), 1, "{parts:?}");
    assert_eq!(count(" coordinator "), 1, "{parts:?}");
    assert_eq!(count(" worker "), 2, "{parts:?}");
    let stderr = up.stderr();
    assert!(
        stderr.contains(&format!("export VOLLEY_COORDINATOR={}", up.url)),
        "{stderr}"
    );
    assert!(
        stderr.contains("volley submit examples/chain.yaml --watch"),
        "{stderr}"
    );

    // The admin token: printed as an export line, kept in a 0600 file.
    let token = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("export VOLLEY_TOKEN="))
        .unwrap_or_else(|| panic!("no export VOLLEY_TOKEN line: {stderr}"))
        .to_owned();
    let token_file = stderr
        .lines()
        .find_map(|line| line.strip_prefix("[up] admin token  "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no admin token line: {stderr}"))
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(&token_file).expect("the token file exists");
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&token_file).expect("read"), token);
    }
    // Without it, the cluster refuses the call.
    let refused = common::volley()
        .args(["list", "--coordinator", &up.url])
        .env_remove("VOLLEY_TOKEN")
        .output()
        .await
        .expect("volley list runs");
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");

    // What the banner says to do works.
    let submitted = common::volley()
        .env("VOLLEY_TOKEN", &token)
        .args([
            "submit",
            &example("chain.yaml"),
            "--watch",
            "--output",
            "json",
        ])
        .env("VOLLEY_COORDINATOR", &up.url)
        .env("VOLLEY_LOG", "warn")
        .output()
        .await
        .expect("volley submit runs");
    assert_eq!(
        submitted.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&submitted.stdout),
        String::from_utf8_lossy(&submitted.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&submitted.stdout).expect("a JSON report");
    assert_eq!(report["state"], "succeeded", "{report}");
    assert!(
        root.path()
            .join("target/volley-examples/ratelimit.txt")
            .exists(),
        "the write op wrote under --root"
    );
    let health = common::volley()
        .args(["health", "--coordinator", &up.url])
        .output()
        .await
        .expect("volley health runs");
    assert_eq!(health.status.code(), Some(0), "{health:?}");

    signal(up.pid, "TERM");
    assert_eq!(up.exit_code().await, Some(0), "{}", up.stderr());
    // volley up reaped them all before it exited: none is left, not even
    // as a zombie.
    for (pid, cmdline) in &parts {
        assert!(is_gone(*pid), "{pid} {cmdline} still runs");
    }
    let stderr = up.stderr();
    let stopping: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("[up] stopping"))
        .collect();
    assert_eq!(
        stopping,
        [
            "[up] stopping workers (they finish their running ops)",
            "[up] stopping the coordinator",
            "[up] stopping redis"
        ],
        "{stderr}"
    );
    let removed = stderr
        .lines()
        .find_map(|line| line.strip_prefix("[up] stopped; removed "))
        .unwrap_or_else(|| panic!("no temp dir removed: {stderr}"));
    assert!(!std::path::Path::new(removed).exists(), "{removed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_names_a_part_that_dies_and_stops_the_rest() {
    let root = tempfile::tempdir().expect("temp dir");
    let root_text = root.path().to_string_lossy().into_owned();
    let mut up = Up::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--root",
        &root_text,
    ])
    .await;
    let parts = children_of(up.pid);
    assert_eq!(parts.len(), 4, "{parts:?}");
    let (worker_pid, _) = parts
        .iter()
        .find(|(_, cmdline)| cmdline.contains("--id worker-2"))
        .unwrap_or_else(|| panic!("worker-2 among {parts:?}"));
    signal(*worker_pid, "KILL");
    assert_eq!(up.exit_code().await, Some(3), "{}", up.stderr());
    let stderr = up.stderr();
    assert!(
        stderr.contains(&format!(
            "the worker-2 (pid {worker_pid}) exited unexpectedly (killed by signal 9)"
        )),
        "{stderr}"
    );
    for (pid, cmdline) in &parts {
        assert!(is_gone(*pid), "{pid} {cmdline} still runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_up_leaves_no_coordinator_or_workers_behind() {
    // An outside Redis: a SIGKILLed `volley up` would leave a redis-server
    // of its own behind (documented), which this test would have to clean.
    let redis = volley_testkit::RedisServer::start().expect("redis-server starts");
    let root = tempfile::tempdir().expect("temp dir");
    let root_text = root.path().to_string_lossy().into_owned();
    let mut up = Up::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--redis",
        &redis.url(),
        "--root",
        &root_text,
    ])
    .await;
    let parts = children_of(up.pid);
    assert_eq!(parts.len(), 3, "{parts:?}");
    signal(up.pid, "KILL");
    let _ = up.child.wait().await;
    // Their stdin closed with volley up: they stop by themselves.
    wait_until_gone(&parts).await;
}

#[tokio::test]
async fn up_without_redis_server_on_the_path_says_what_to_do() {
    let empty = tempfile::tempdir().expect("temp dir");
    let output = common::volley()
        .args(["up", "--listen", "127.0.0.1:0"])
        .env("PATH", empty.path())
        .env_remove("VOLLEY_REDIS")
        .output()
        .await
        .expect("volley up runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`redis-server` is not on the PATH") && stderr.contains("--redis URL"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[tokio::test]
async fn up_on_a_port_in_use_names_the_port() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = holder.local_addr().expect("address");
    let output = common::volley()
        .args(["up", "--listen", &address.to_string()])
        .output()
        .await
        .expect("volley up runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {} is in use", address.port())),
        "{stderr}"
    );
}
