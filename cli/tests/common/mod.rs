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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
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
        let coordinator = Command::new(volley_bin())
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
        let worker = Command::new(volley_bin())
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
        self.coordinator = Command::new(volley_bin())
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
        match Client::connect(url).await {
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
