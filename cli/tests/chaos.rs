//! Chaos: a 2,000-op DAG on four worker processes, two coordinators behind
//! one address and a real `redis-server`, while the test kills a random
//! worker (kill -9) every ~2 s and starts a new one, kills the owning
//! coordinator once (and starts it again, as Kubernetes would), and freezes
//! Redis (SIGSTOP) for 5 s.
//!
//! Every op appends `op-id attempt` to a ledger file before it works. The
//! outcome is deterministic: the batch succeeds; every op is reported
//! succeeded exactly once, with the right output; an op ran more than once
//! only where an earlier attempt was lost (its worker died, or its result
//! died with a coordinator) — the events name each such attempt; no attempt
//! ran twice. The counts are printed (`--nocapture` shows them). Nothing
//! asserts how long anything took; the whole test is bounded by a deadline
//! only as a hang guard.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::Fleet;
use futures::StreamExt;
use serde_json::json;
use volley_client::v1::{self, BatchState, EventKind, OpState};
use volley_testkit::RedisServer;

const CHAINS: usize = 100;
const DEPTH: usize = 20;

fn op_id(chain: usize, depth: usize) -> String {
    format!("c{chain}d{depth}")
}

/// 100 chains of 20; each op also depends on the previous op of the next
/// chain, so work fans across chains at every depth.
fn chaos_batch(ledger: &str) -> v1::Batch {
    let mut ops = Vec::with_capacity(CHAINS * DEPTH);
    for depth in 0..DEPTH {
        for chain in 0..CHAINS {
            let after = if depth == 0 {
                Vec::new()
            } else {
                vec![
                    op_id(chain, depth - 1),
                    op_id((chain + 1) % CHAINS, depth - 1),
                ]
            };
            ops.push(v1::Op {
                id: op_id(chain, depth),
                kind: "agent".into(),
                args_json: json!({
                    "cmd": format!(
                        "echo \"$VOLLEY_OP $VOLLEY_ATTEMPT\" >> {ledger} && sleep 0.15 && echo \"out-$VOLLEY_OP\""
                    )
                })
                .to_string(),
                after,
                attempts: 20,
                ..Default::default()
            });
        }
    }
    v1::Batch {
        name: "chaos".into(),
        ops,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_reports_nothing_twice() {
    let flags = [
        "--resync-interval",
        "250ms",
        "--lease",
        "10s",
        "--ownership-ttl",
        "2s",
        "--reconnect-grace",
        "1s",
    ];
    let redis = RedisServer::start().expect("redis-server");
    let mut fleet = Fleet::start(redis, 2, &flags).await;
    let mut next_worker = 0;
    for _ in 0..4 {
        fleet.add_worker(&format!("w{next_worker}"), &[]).await;
        next_worker += 1;
    }
    fleet.wait_for_workers(4).await;
    let ledger = fleet.root.path().join("ledger");
    let ledger_path = ledger.to_string_lossy().into_owned();
    let submitted = fleet
        .client
        .submit(chaos_batch(&ledger_path))
        .await
        .expect("submit");
    let batch = submitted.batch_id.clone();
    let watch = {
        let client = fleet.client.clone();
        let batch = batch.clone();
        tokio::spawn(async move {
            let stream = client.watch(&batch, 0).await.expect("watch starts");
            stream
                .map(|event| event.expect("no watch error"))
                .collect::<Vec<_>>()
                .await
        })
    };

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut worker_kills = 0;
    let mut coordinator_killed = false;
    let mut coordinator_back = false;
    let mut redis_frozen = false;
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ticks += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chaos batch never finished"
        );
        let status = match fleet.client.summary(&batch).await {
            Ok(status) => status,
            Err(_) => continue, // a coordinator is down or Redis is frozen
        };
        if status.state() != BatchState::Running {
            break;
        }
        // A random worker dies; a new one takes its place.
        let victim = (ticks as usize * 7 + 3) % fleet.workers.len();
        let victim = fleet.workers[victim].0.clone();
        fleet.kill_worker(&victim).await;
        worker_kills += 1;
        fleet.add_worker(&format!("w{next_worker}"), &[]).await;
        next_worker += 1;

        if ticks == 2 && !status.owner.is_empty() {
            let owner = Fleet::index_of(&status.owner).expect("owner c0 or c1");
            fleet.kill_coordinator(owner).await;
            coordinator_killed = true;
        } else if ticks == 3 && coordinator_killed {
            for index in 0..2 {
                if fleet.coordinators[index].1.is_none() {
                    fleet.start_coordinator(index).await;
                    coordinator_back = true;
                }
            }
        } else if ticks == 4 {
            let pid = fleet.redis.pid().expect("redis pid");
            signal(pid, "STOP");
            tokio::time::sleep(Duration::from_secs(5)).await;
            signal(pid, "CONT");
            redis_frozen = true;
        }
    }
    let events = tokio::time::timeout(Duration::from_secs(60), watch)
        .await
        .expect("the watch ends")
        .expect("watch task");
    assert!(
        coordinator_killed && coordinator_back,
        "the owner was killed and came back"
    );
    assert!(redis_frozen, "Redis was frozen during the run");

    // The batch, every op, every output.
    let status = fleet.client.status(&batch).await.expect("status");
    assert_eq!(status.state(), BatchState::Succeeded, "{}", status.error);
    assert_eq!(status.ops.len(), CHAINS * DEPTH);
    for op in &status.ops {
        assert_eq!(op.state(), OpState::Succeeded, "{op:?}");
        assert_eq!(op.output.trim_end(), format!("out-{}", op.id), "{op:?}");
    }

    // The event stream: gapless, and exactly one success per op.
    for (position, event) in events.iter().enumerate() {
        assert_eq!(event.seq, position as u64 + 1, "gapless events");
    }
    let mut successes: HashMap<&str, usize> = HashMap::new();
    let mut lost_attempts: BTreeSet<(String, u32)> = BTreeSet::new();
    for event in &events {
        match event.kind() {
            EventKind::OpSucceeded => *successes.entry(event.op_id.as_str()).or_default() += 1,
            EventKind::OpRetrying | EventKind::OpFailed => {
                lost_attempts.insert((event.op_id.clone(), event.attempt));
            }
            _ => {}
        }
    }
    assert_eq!(successes.len(), CHAINS * DEPTH);
    assert!(
        successes.values().all(|count| *count == 1),
        "every op reported succeeded exactly once"
    );

    // The ledger: which attempts really ran.
    let text = std::fs::read_to_string(&ledger).expect("read the ledger");
    let mut ran: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in text.lines() {
        let (id, attempt) = line.split_once(' ').expect("`op attempt` lines");
        ran.entry(id.to_owned())
            .or_default()
            .push(attempt.parse().expect("attempt number"));
    }
    assert_eq!(ran.len(), CHAINS * DEPTH, "every op ran");
    let final_attempt: HashMap<&str, u32> = status
        .ops
        .iter()
        .map(|op| (op.id.as_str(), op.attempts))
        .collect();
    let mut duplicates = 0;
    let mut ops_run_again = 0;
    for (id, attempts) in &ran {
        let unique: BTreeSet<u32> = attempts.iter().copied().collect();
        assert_eq!(
            unique.len(),
            attempts.len(),
            "op {id}: no attempt ran twice: {attempts:?}"
        );
        let last = final_attempt[id.as_str()];
        assert!(
            unique.contains(&last),
            "op {id}: its reported attempt {last} ran"
        );
        if attempts.len() > 1 {
            ops_run_again += 1;
            duplicates += attempts.len() - 1;
        }
        for attempt in unique.iter().filter(|attempt| **attempt != last) {
            assert!(
                lost_attempts.contains(&(id.clone(), *attempt)),
                "op {id}: attempt {attempt} ran before the final one, so it must have been lost (an event says so)"
            );
        }
    }
    eprintln!(
        "chaos: {} ops; worker kills {worker_kills}; owner coordinator killed once; Redis frozen 5 s; \
         ops run more than once {ops_run_again}; extra runs {duplicates}; \
         reported twice 0; lost 0; wall {:?}",
        CHAINS * DEPTH,
        started.elapsed()
    );
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}
