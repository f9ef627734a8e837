//! `volley coordinator` against a Redis that speaks TLS only and wants a
//! password: it serves with `rediss://`, `--redis-tls-ca` and
//! `--redis-password-file` (or the password in the URL), and the password
//! shows nowhere in its output, not even at debug level; with a wrong
//! password it exits non-zero saying Redis refused it, without the password.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{free_port, volley};
use tokio::process::{Child, Command};
use volley_client::HealthProbe;
use volley_testkit::{RedisOptions, RedisServer};

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "e2e0tls0secret0pw";

fn tls_redis() -> RedisServer {
    RedisServer::start_with(RedisOptions::tls_with_password(PASSWORD))
        .expect("a TLS redis-server with a password starts")
}

/// `volley coordinator` on `listen` with `redis_flags`, logging at debug
/// level (the most it could leak), output captured.
fn coordinator(listen: &str, redis_flags: &[&str]) -> Command {
    let mut command = volley();
    command
        .args(["coordinator", "--listen", listen])
        .args(redis_flags)
        .env_remove("VOLLEY_REDIS")
        .env_remove("VOLLEY_REDIS_TLS_CA")
        .env_remove("VOLLEY_REDIS_TLS_CERT")
        .env_remove("VOLLEY_REDIS_TLS_KEY")
        .env_remove("VOLLEY_REDIS_PASSWORD_FILE")
        .env("VOLLEY_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits until the coordinator at `url` answers SERVING, or panics with
/// its output if it exits first or the deadline passes.
async fn wait_serving(child: &mut Child, url: &str) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(probe) = HealthProbe::connect(url, Duration::from_secs(1)).await
            && probe
                .check("")
                .await
                .is_ok_and(|status| status.is_serving())
        {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the coordinator exited with {status} before serving");
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the coordinator at {url} never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGTERM, then everything it wrote.
async fn stop(child: Child) -> Output {
    let pid = child.id().expect("the coordinator runs");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid}");
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the coordinator stops after SIGTERM")
        .expect("its output")
}

fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_serves_over_tls_with_a_password_file_and_never_prints_the_password() {
    let redis = tls_redis();
    let secrets = tempfile::tempdir().expect("temp dir");
    let password_file = secrets.path().join("redis-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("write the password file");
    let listen = format!("127.0.0.1:{}", free_port());
    let ca = redis
        .ca_cert_path()
        .expect("TLS")
        .to_string_lossy()
        .into_owned();
    let mut child = coordinator(
        &listen,
        &[
            "--redis",
            &format!("rediss://127.0.0.1:{}", redis.port()),
            "--redis-tls-ca",
            &ca,
            "--redis-password-file",
            &password_file.to_string_lossy(),
        ],
    )
    .spawn()
    .expect("the coordinator starts");
    wait_serving(&mut child, &format!("http://{listen}")).await;

    let output = stop(child).await;
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_url_never_shows_in_the_coordinators_output() {
    let redis = tls_redis();
    let listen = format!("127.0.0.1:{}", free_port());
    let ca = redis
        .ca_cert_path()
        .expect("TLS")
        .to_string_lossy()
        .into_owned();
    let mut child = coordinator(&listen, &["--redis-tls-ca", &ca])
        // From the environment, as a deployment would pass it.
        .env("VOLLEY_REDIS", redis.url())
        .spawn()
        .expect("the coordinator starts");
    wait_serving(&mut child, &format!("http://{listen}")).await;

    let output = stop(child).await;
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_file_ends_the_coordinator_with_an_error_naming_redis_not_the_password() {
    let redis = tls_redis();
    let wrong = "not0the0right0one";
    let secrets = tempfile::tempdir().expect("temp dir");
    let password_file = secrets.path().join("redis-password");
    std::fs::write(&password_file, format!("{wrong}\n")).expect("write the password file");
    let listen = format!("127.0.0.1:{}", free_port());
    let ca = redis
        .ca_cert_path()
        .expect("TLS")
        .to_string_lossy()
        .into_owned();
    let output = tokio::time::timeout(
        DEADLINE,
        coordinator(
            &listen,
            &[
                "--redis",
                // The URL's password is overridden by the file's.
                &redis.url(),
                "--redis-tls-ca",
                &ca,
                "--redis-password-file",
                &password_file.to_string_lossy(),
            ],
        )
        .output(),
    )
    .await
    .expect("the coordinator gives up before the deadline")
    .expect("the coordinator runs");
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert_eq!(output.status.code(), Some(3), "unreachable: {text}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: redis at rediss://:***@127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!text.contains(wrong), "the wrong password leaked:\n{text}");
    assert!(
        !text.contains(PASSWORD),
        "the URL's password leaked:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_is_an_invalid_command_line() {
    let listen = format!("127.0.0.1:{}", free_port());
    let output = tokio::time::timeout(
        DEADLINE,
        coordinator(
            &listen,
            &[
                "--redis",
                &format!("rediss://:{PASSWORD}@127.0.0.1:1"),
                "--redis-tls-ca",
                "/no/such/ca.pem",
            ],
        )
        .output(),
    )
    .await
    .expect("the coordinator gives up before the deadline")
    .expect("the coordinator runs");
    let text = all_output(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("error: --redis-tls-ca /no/such/ca.pem: "),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
}
