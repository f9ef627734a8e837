//! Secrets by reference on real processes: `${secret.API}` reaches the
//! program through the worker's `--secret-dir`, never the coordinator or
//! Redis, and its value is masked (`***`) in the op's output, error,
//! details, the events and the report; the worker's other secrets do not
//! reach programs; an op whose secret no worker holds fails saying which.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, batch_file, report_op, run_json, submit_watched_json, volley};

const VALUE: &str = "s3cr3t-value-2c9f";

#[tokio::test]
async fn a_secret_reaches_its_program_and_nothing_else() {
    let cluster = Cluster::start_with(0, &["--report-blocked-after", "200ms"]).await;
    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::write(secrets.path().join("API"), format!("{VALUE}\n")).expect("write the secret");
    let root = cluster.root().to_string_lossy().into_owned();
    let worker = volley()
        .args([
            "worker",
            "--coordinator",
            &cluster.url,
            "--id",
            "holder",
            "--slots",
            "2",
        ])
        .args(["--allow-shell", "--root", &root])
        .args(["--secret-dir", secrets.path().to_str().expect("utf-8")])
        .env("VOLLEY_SECRET_OTHER", "never-for-programs")
        .env("VOLLEY_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts");
    cluster
        .client
        .wait_for_workers(1, Duration::from_secs(30))
        .await
        .expect("workers");
    let file = batch_file(
        cluster.root(),
        "secret.yaml",
        r#"name: secretive
on_failure: continue
ops:
  - id: use
    kind: shell
    args:
      cmd: 'echo "got ${secret.API} other=[$VOLLEY_SECRET_OTHER]"; printf "%s" "$TOKEN" > token.txt'
      env: {TOKEN: "${secret.API}"}
  - {id: fail, kind: shell, args: {cmd: 'echo "bad ${secret.API}" >&2; exit 3'}}
"#,
    );
    let (code, json) = submit_watched_json(&cluster, &file).await;
    let report = json.to_string();
    assert_eq!(code, Some(1), "{report}");
    let op = |id: &str| report_op(&json, id);
    assert_eq!(op("use")["output"], "got *** other=[]\n");
    assert_eq!(op("fail")["state"], "failed");
    assert!(
        op("fail")["error"]
            .as_str()
            .unwrap_or("")
            .ends_with("bad ***"),
        "{}",
        op("fail")
    );

    // The program got the value itself.
    assert_eq!(
        std::fs::read_to_string(cluster.root().join("token.txt")).expect("token.txt"),
        VALUE
    );
    // Nowhere else: not in the report, the events, Redis or the logs.
    assert!(!report.contains(VALUE), "{report}");
    let mut events = cluster
        .client
        .watch(json["batch_id"].as_str().expect("id"), 0)
        .await
        .expect("watch");
    while let Some(event) = tokio_stream::StreamExt::next(&mut events).await {
        let event = event.expect("event");
        assert!(!event.message.contains(VALUE), "{event:?}");
    }
    let dump = std::process::Command::new("redis-cli")
        .args(["-u", &cluster.redis.url(), "--no-raw", "eval"])
        .arg("local out = {} for _, key in ipairs(redis.call('KEYS', '*')) do local t = redis.call('TYPE', key).ok if t == 'hash' then for _, v in ipairs(redis.call('HGETALL', key)) do out[#out+1] = v end elseif t == 'string' then out[#out+1] = redis.call('GET', key) end end return out")
        .arg("0")
        .output()
        .expect("redis-cli");
    let redis = String::from_utf8_lossy(&dump.stdout);
    assert!(
        redis.contains("secretive"),
        "the dump reads the batch: {redis}"
    );
    assert!(!redis.contains(VALUE), "the value is in Redis");
    // An op whose secret no worker holds waits, and says why.
    let missing = cluster
        .client
        .submit(
            volley_client::parse_batch(
                "name: lacking\nops:\n  - {id: missing, kind: shell, args: {cmd: 'echo ${secret.NOBODY_HAS_IT}'}}\n",
                "lacking.yaml",
            )
            .expect("batch"),
        )
        .await
        .expect("submit")
        .batch_id;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let reasons = loop {
        let why = cluster.client.why(&missing, "missing").await.expect("why");
        if why
            .reasons
            .iter()
            .any(|reason| reason.contains("holding secret `NOBODY_HAS_IT`"))
        {
            break why.reasons;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "why never named the secret: {why:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!reasons.is_empty());
    cluster.client.cancel(&missing).await.expect("cancel");
    let mut worker = worker;
    let _ = worker.start_kill();
    let logs = worker.wait_with_output().await.expect("worker output");
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(logs.contains("holder"), "the worker logged: {logs}");
    assert!(!logs.contains(VALUE), "the value is in the worker's log");
}

#[tokio::test]
async fn volley_run_fills_secrets_from_its_secret_dir_and_masks_them() {
    let root = tempfile::tempdir().expect("temp dir");
    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::write(secrets.path().join("API"), VALUE).expect("write the secret");
    let file = batch_file(
        root.path(),
        "secret.yaml",
        r#"name: embedded-secret
ops:
  - id: use
    kind: shell
    args: {cmd: 'printf "%s" "$KEY" > key.txt; echo "key ${secret.API}"', env: {KEY: "${secret.API}"}}
"#,
    );
    let secret_dir = secrets.path().to_str().expect("utf-8");
    let (code, json) = run_json(root.path(), &file, &["--secret-dir", secret_dir]).await;
    let report = json.to_string();
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("key ***"), "{report}");
    assert!(!report.contains(VALUE), "{report}");
    assert_eq!(
        std::fs::read_to_string(root.path().join("key.txt")).expect("key.txt"),
        VALUE
    );
}
