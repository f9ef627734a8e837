//! End-to-end harness: a real `redis-server`, a `volley coordinator` and
//! `volley worker`s as separate processes on free ports, killed on drop.
//! Waits are for conditions with deadlines, never fixed sleeps.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use volley_client::Client;
use volley_testkit::RedisServer;

pub fn volley_bin() -> &'static str {
    env!("CARGO_BIN_EXE_volley")
}

/// The admin token of every test cluster: coordinators read it from
/// [`admin_token_file`], clients and workers send it.
pub const ADMIN_TOKEN: &str = "volley-e2e-admin-token-0123456789abcdef";

/// A file holding [`ADMIN_TOKEN`] (written once per test process).
pub fn admin_token_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("volley-e2e-admin-{}.token", std::process::id()));
        std::fs::write(&path, ADMIN_TOKEN).expect("write the admin token file");
        path
    })
}

/// `volley` as the tests run it: a coordinator finds the admin token file
/// in its environment (VOLLEY_ADMIN_TOKEN_FILE), and workers and client
/// commands send the admin token (VOLLEY_TOKEN). A test about tokens
/// overrides or removes them.
pub fn volley() -> Command {
    let mut command = Command::new(volley_bin());
    command
        .env("VOLLEY_ADMIN_TOKEN_FILE", admin_token_file())
        .env("VOLLEY_TOKEN", ADMIN_TOKEN);
    command
}

/// [`volley`] as a blocking `std::process::Command`.
pub fn volley_std() -> std::process::Command {
    let mut command = std::process::Command::new(volley_bin());
    command
        .env("VOLLEY_ADMIN_TOKEN_FILE", admin_token_file())
        .env("VOLLEY_TOKEN", ADMIN_TOKEN);
    command
}

/// A client of `url` with the admin token.
pub async fn admin_client(url: &str) -> Result<Client, volley_client::ClientError> {
    Client::connect_with(&volley_client::Connection::new(url).with_token(ADMIN_TOKEN)).await
}

pub fn free_port() -> u16 {
    volley_testkit::free_port().expect("a free port")
}

pub struct Cluster {
    pub redis: RedisServer,
    pub coordinator: Child,
    pub workers: Vec<Child>,
    pub url: String,
    pub root: tempfile::TempDir,
    pub client: Client,
}

impl Cluster {
    /// Redis, one coordinator and `workers` workers (4 slots each, shell
    /// allowed, rooted in a fresh temp dir), all connected.
    pub async fn start(workers: usize) -> Cluster {
        Cluster::start_with(workers, &[]).await
    }

    /// `start`, with extra flags for the coordinator.
    pub async fn start_with(workers: usize, coordinator_flags: &[&str]) -> Cluster {
        let redis = RedisServer::start().expect("redis-server starts");
        let root = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let coordinator = volley()
            .args([
                "coordinator",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis",
                &redis.url(),
            ])
            .args(coordinator_flags)
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("coordinator starts");
        let client = connect_with_deadline(&url, Duration::from_secs(20)).await;
        let mut cluster = Cluster {
            redis,
            coordinator,
            workers: Vec::new(),
            url,
            root,
            client,
        };
        for number in 0..workers {
            cluster.add_worker(&format!("w{number}")).await;
        }
        let connected = cluster
            .client
            .wait_for_workers(workers, Duration::from_secs(20))
            .await
            .expect("list workers");
        assert_eq!(connected, workers, "every worker connected");
        cluster
    }

    /// A worker as `start` makes them (4 slots, shell allowed, rooted in
    /// the cluster's temp dir).
    pub async fn add_worker(&mut self, id: &str) {
        self.add_worker_with(id, &[]).await;
    }

    /// A worker as `start` makes them, with extra flags (`["--label", "gpu=yes"]`).
    pub async fn add_worker_with(&mut self, id: &str, extra: &[&str]) {
        let root = self.root.path().to_string_lossy().into_owned();
        let mut flags = vec![
            "--slots",
            "4",
            "--allow-shell",
            "--heartbeat",
            "500ms",
            "--root",
            &root,
        ];
        flags.extend_from_slice(extra);
        self.add_bare_worker(id, &flags).await;
    }

    /// A worker with exactly these flags (besides its coordinator and id).
    pub async fn add_bare_worker(&mut self, id: &str, flags: &[&str]) {
        let worker = volley()
            .args(["worker", "--coordinator", &self.url, "--id", id])
            .args(flags)
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("worker starts");
        self.workers.push(worker);
    }

    /// Kills the coordinator (SIGKILL) and starts a new one on the same
    /// address and Redis, with the same flags.
    pub async fn restart_coordinator(&mut self, coordinator_flags: &[&str]) {
        let _ = self.coordinator.start_kill();
        let _ = self.coordinator.wait().await;
        let address = self.url.trim_start_matches("http://").to_owned();
        self.coordinator = volley()
            .args([
                "coordinator",
                "--listen",
                &address,
                "--redis",
                &self.redis.url(),
            ])
            .args(coordinator_flags)
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("coordinator restarts");
        self.client = connect_with_deadline(&self.url, Duration::from_secs(20)).await;
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, `KILL`) to a process.
    pub fn signal(child: &Child, signal: &str) {
        let pid = child.id().expect("process still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

pub async fn connect_with_deadline(url: &str, deadline: Duration) -> Client {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match admin_client(url).await {
            Ok(client) => {
                if client.workers().await.is_ok() {
                    return client;
                }
            }
            Err(error) if tokio::time::Instant::now() >= until => {
                panic!("coordinator at {url} never came up: {error}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Writes `text` to a fresh temp file with the given extension.
pub fn batch_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write batch file");
    path
}

/// Several coordinators behind one address (a TCP balancer standing in for
/// a Kubernetes Service), workers and a client connected through it, on
/// one Redis. Coordinator `i` is named `c<i>`.
pub struct Fleet {
    pub redis: RedisServer,
    pub balancer: volley_testkit::TcpBalancer,
    /// One per coordinator slot: its port and its process (None: stopped).
    pub coordinators: Vec<(u16, Option<Child>)>,
    pub coordinator_flags: Vec<String>,
    pub workers: Vec<(String, Child)>,
    pub root: tempfile::TempDir,
    pub client: Client,
}

impl Fleet {
    /// `coordinators` coordinators (with `flags`) and no workers yet.
    pub async fn start(redis: RedisServer, coordinators: usize, flags: &[&str]) -> Fleet {
        let ports: Vec<u16> = (0..coordinators).map(|_| free_port()).collect();
        let backends = ports
            .iter()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let balancer = volley_testkit::TcpBalancer::start(backends).expect("balancer starts");
        let mut fleet = Fleet {
            redis,
            balancer,
            coordinators: ports.into_iter().map(|port| (port, None)).collect(),
            coordinator_flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
            workers: Vec::new(),
            root: tempfile::tempdir().expect("temp dir"),
            client: Client::from_channel(String::new(), lazy_channel("http://127.0.0.1:1")),
        };
        for index in 0..coordinators {
            fleet.start_coordinator(index).await;
        }
        fleet.client = connect_with_deadline(&fleet.url(), Duration::from_secs(20)).await;
        fleet
    }

    /// The one address everything connects to.
    pub fn url(&self) -> String {
        self.balancer.url()
    }

    pub fn coordinator_id(index: usize) -> String {
        format!("c{index}")
    }

    /// Starts coordinator `index` (again) on its port, and waits until it
    /// answers there directly.
    pub async fn start_coordinator(&mut self, index: usize) {
        let port = self.coordinators[index].0;
        let child = volley()
            .args([
                "coordinator",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis",
                &self.redis.url(),
                "--id",
                &Fleet::coordinator_id(index),
            ])
            .args(&self.coordinator_flags)
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("coordinator starts");
        self.coordinators[index].1 = Some(child);
        connect_with_deadline(&format!("http://127.0.0.1:{port}"), Duration::from_secs(20)).await;
    }

    /// kill -9 coordinator `index`.
    pub async fn kill_coordinator(&mut self, index: usize) {
        if let Some(mut child) = self.coordinators[index].1.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM coordinator `index` and waits for it to exit.
    pub async fn stop_coordinator(&mut self, index: usize) -> std::process::ExitStatus {
        let mut child = self.coordinators[index]
            .1
            .take()
            .expect("coordinator running");
        Cluster::signal(&child, "TERM");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("coordinator exits after SIGTERM")
            .expect("wait for coordinator")
    }

    /// The slot of the coordinator named `id` (`c<i>`).
    pub fn index_of(id: &str) -> Option<usize> {
        id.strip_prefix('c')?.parse().ok()
    }

    /// A worker through the balancer (4 slots, shell allowed, heartbeat
    /// 200 ms, rooted in the fleet's temp dir), with extra flags.
    pub async fn add_worker(&mut self, id: &str, extra: &[&str]) {
        let root = self.root.path().to_string_lossy().into_owned();
        let worker = volley()
            .args(["worker", "--coordinator", &self.url(), "--id", id])
            .args([
                "--slots",
                "4",
                "--allow-shell",
                "--heartbeat",
                "200ms",
                "--root",
                &root,
            ])
            .args(extra)
            .env("VOLLEY_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("worker starts");
        self.workers.push((id.to_owned(), worker));
    }

    /// kill -9 the worker named `id`.
    pub async fn kill_worker(&mut self, id: &str) {
        if let Some(position) = self.workers.iter().position(|(name, _)| name == id) {
            let (_, mut child) = self.workers.remove(position);
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Waits until the cluster lists exactly `count` workers.
    pub async fn wait_for_workers(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(workers) = self.client.workers().await
                && workers.len() == count
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster never listed {count} workers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A channel that connects on first use (for placeholders).
pub fn lazy_channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("valid url")
        .connect_lazy()
}

/// `volley submit FILE --watch --output json` against `cluster` with the
/// admin token: the exit code and the report.
pub async fn submit_watched_json(
    cluster: &Cluster,
    file: &Path,
) -> (Option<i32>, serde_json::Value) {
    let output = volley()
        .args([
            "submit",
            file.to_str().expect("utf-8"),
            "--watch",
            "--output",
            "json",
        ])
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley submit");
    report_of(output)
}

/// `volley run FILE --output json ARGS…` in `dir`: the exit code and the report.
pub async fn run_json(dir: &Path, file: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let output = volley()
        .args(["run", file.to_str().expect("utf-8"), "--output", "json"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley run");
    report_of(output)
}

fn report_of(output: std::process::Output) -> (Option<i32>, serde_json::Value) {
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "no JSON report ({error}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// Op `id` of a JSON report.
pub fn report_op(report: &serde_json::Value, id: &str) -> serde_json::Value {
    report["ops"]
        .as_array()
        .and_then(|ops| ops.iter().find(|op| op["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no op {id} in {report}"))
}

/// A `volley` client process against `url`, its output piped.
pub fn client_process(url: &str, args: &[&str]) -> tokio::process::Child {
    volley()
        .args(args)
        .env("VOLLEY_COORDINATOR", url)
        .env("VOLLEY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("volley starts")
}
