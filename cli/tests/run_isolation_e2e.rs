//! `volley run` serves no TCP port: its embedded coordinator listens on a
//! Unix socket in a directory only its user may enter, and wants a token
//! only that run knows. Another process that finds the socket still cannot
//! submit into the run; the run's own ops reach it (`volley memory`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use common::{batch_file, volley};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn another_process_cannot_submit_into_a_volley_run() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = batch_file(
        root.path(),
        "held.yaml",
        r#"name: held-open
ops:
  - id: hold
    kind: agent
    args: {cmd: 'echo "$VOLLEY_COORDINATOR" > coordinator.txt; volley memory put seen yes; while [ ! -f release ]; do sleep 0.05; done; volley memory get seen'}
"#,
    );
    let run = volley()
        .args(["run", file.to_str().expect("utf-8"), "--output", "json"])
        .env_remove("VOLLEY_TOKEN")
        .current_dir(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("volley run starts");
    let address = root.path().join("coordinator.txt");
    let until = tokio::time::Instant::now() + DEADLINE;
    let url = loop {
        if let Ok(text) = std::fs::read_to_string(&address)
            && !text.trim().is_empty()
        {
            break text.trim().to_owned();
        }
        assert!(tokio::time::Instant::now() < until, "the op never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A Unix socket, in a directory only this user may enter.
    let socket = url.strip_prefix("unix://").expect("a unix:// address");
    let directory = std::path::Path::new(socket).parent().expect("a directory");
    let mode = std::fs::metadata(directory)
        .expect("the socket's directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the directory is private: {mode:o}");
    // Found, it still refuses a stranger: no token, or a guessed one.
    let intruder = batch_file(
        root.path(),
        "intruder.yaml",
        "name: intruder\nops:\n  - {id: x, kind: shell, args: {cmd: 'touch PWNED'}}\n",
    );
    for token in [
        None,
        Some("0123456789abcdef0123456789abcdef0123456789abcdef"),
    ] {
        let mut command = volley();
        command
            .args([
                "submit",
                intruder.to_str().expect("utf-8"),
                "--coordinator",
                &url,
            ])
            .env_remove("VOLLEY_TOKEN");
        if let Some(token) = token {
            command.env("VOLLEY_TOKEN", token);
        }
        let refused = command.output().await.expect("volley submit runs");
        assert_eq!(
            refused.status.code(),
            Some(5),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    std::fs::write(root.path().join("release"), "").expect("release the op");
    let output = tokio::time::timeout(DEADLINE, run.wait_with_output())
        .await
        .expect("the run ends")
        .expect("volley run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["ops"][0]["output"], "yes");
    assert!(!root.path().join("PWNED").exists());
    assert!(!directory.exists(), "the socket's directory is removed");
}
