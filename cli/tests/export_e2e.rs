//! `volley export` and `volley dashboard --file` end to end: a real
//! cluster (redis, a coordinator with its dashboard, workers) runs a batch
//! with a foreach and a failing op; the batch is exported through the
//! public API (a prefix of its id, another tenant refused), the cluster is
//! stopped, and the file served by `volley dashboard --file` answers the
//! same JSON as the live dashboard did for the same batch. Hostile files
//! are refused with a message that names the problem.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::{ADMIN_TOKEN, Cluster, batch_file, free_port, submit_watched_json, volley};

const SECRET: &str = "hunter2-never-exported";

const BATCH: &str = r#"
name: exported
ops:
  - id: prep
    kind: shell
    store_as: result/prep
    args: {cmd: "echo prepared; echo 'prep says hi' >&2", env: {API_TOKEN: "hunter2-never-exported"}}
  - id: each
    kind: shell
    foreach: [a, b, c]
    after: [prep]
    args: {cmd: "echo item ${item}"}
  - id: broken
    kind: shell
    attempts: 1
    after: [prep]
    args: {cmd: "echo partial; echo 'oops: broken on purpose' >&2; exit 3"}
  - id: last
    kind: echo
    after: [each]
    args: {text: done}
"#;

/// A batch of a shared namespace: its memory is the namespace's.
const SHARED_BATCH: &str = r#"
name: shared
namespace: team-x
ops:
  - {id: put, kind: memory.put, args: {key: shared/greeting, value: hello}}
"#;

/// One HTTP/1.1 request over a plain socket: the status and the body.
fn http(address: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// `POST /api/files` with `body` and these extra header lines: the status
/// and the body.
fn post_file(address: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/files HTTP/1.1\r\nHost: {address}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("send");
    // A refusal may come before the whole body is read.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The status of a GET that names another `Host`.
fn status_as_host(address: &str, host: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn json_get(address: &str, path: &str, token: Option<&str>) -> Value {
    let (status, body) = http(address, "GET", path, token);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
}

fn without(mut value: Value, fields: &[&str]) -> Value {
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            object.remove(*field);
        }
    }
    value
}

async fn volley_with(token: &str, url: &str, args: &[&str]) -> Output {
    volley()
        .args(args)
        .env("VOLLEY_COORDINATOR", url)
        .env("VOLLEY_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `volley dashboard ARGS…` expected to refuse: exit 2 and its stderr.
async fn refused(args: &[&str]) -> String {
    let output = volley()
        .arg("dashboard")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley dashboard runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    stderr(&output)
}

#[tokio::test]
async fn an_exported_batch_shows_in_the_dashboard_as_it_did_live() {
    let dashboard_port = free_port();
    let live = format!("127.0.0.1:{dashboard_port}");
    let cluster = Cluster::start_with(2, &["--dashboard-listen", &live]).await;
    let file = batch_file(cluster.root(), "exported.yaml", BATCH);
    let (code, report) = submit_watched_json(&cluster, &file).await;
    assert_eq!(code, Some(1), "an op failed: {report}");
    let batch = report["batch_id"].as_str().expect("batch id").to_owned();

    // What the live dashboard answers for the batch.
    let token = Some(ADMIN_TOKEN);
    let paths = [
        format!("/api/batches/{batch}"),
        format!("/api/batches/{batch}/graph"),
        format!("/api/batches/{batch}/graph?expand=each"),
        format!("/api/batches/{batch}/ops"),
        format!("/api/batches/{batch}/ops?state=failed"),
        format!("/api/batches/{batch}/timeline"),
    ];
    let live_answers: Vec<Value> = paths
        .iter()
        .map(|path| json_get(&live, path, token))
        .collect();
    let op_ids = ["prep", "each-a", "broken", "last"];
    let live_ops: Vec<Value> = op_ids
        .iter()
        .map(|op| json_get(&live, &format!("/api/batches/{batch}/ops/{op}"), token))
        .collect();

    // Another tenant cannot export it: not found, exit 2.
    let created = volley_with(
        ADMIN_TOKEN,
        &cluster.url,
        &["token", "create", "--role", "client", "--tenant", "other"],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let other = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let refused_export = volley_with(&other, &cluster.url, &["export", &batch]).await;
    assert_eq!(
        refused_export.status.code(),
        Some(2),
        "{}",
        stderr(&refused_export)
    );
    assert!(
        stderr(&refused_export).contains("not found"),
        "{}",
        stderr(&refused_export)
    );
    assert!(refused_export.stdout.is_empty(), "nothing written");

    // GetBatchPlan itself (what export reads args from) checks its caller:
    // another tenant sees no such batch, a worker token may not call it,
    // and a bad request names what is wrong.
    let plan_client = |token: &str| {
        let connection = volley_client::Connection::new(cluster.url.clone()).with_token(token);
        async move {
            volley_client::Client::connect_with(&connection)
                .await
                .expect("connect")
        }
    };
    let status = plan_client(&other)
        .await
        .batch_plan(&batch, 0, 10)
        .await
        .expect_err("another tenant's batch");
    assert!(status.to_string().contains("not found"), "{status}");
    let created = volley_with(
        ADMIN_TOKEN,
        &cluster.url,
        &["token", "create", "--role", "worker"],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let worker_token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let status = plan_client(&worker_token)
        .await
        .batch_plan(&batch, 0, 10)
        .await
        .expect_err("a worker token");
    assert!(
        status
            .to_string()
            .contains("may not call volley.v1.PlanService/GetBatchPlan"),
        "{status}"
    );
    let admin = plan_client(ADMIN_TOKEN).await;
    let status = admin
        .batch_plan("", 0, 10)
        .await
        .expect_err("an empty batch id");
    assert!(status.to_string().contains("batch_id is empty"), "{status}");
    let past_the_end = admin
        .batch_plan(&batch, u32::MAX, u32::MAX)
        .await
        .expect("a page past the end is empty, not an error");
    assert!(past_the_end.args_json.is_empty());
    assert_eq!(past_the_end.total, 6);

    // The owner exports it by a prefix of its id.
    let exported = volley_with(ADMIN_TOKEN, &cluster.url, &["export", &batch[..8]]).await;
    assert_eq!(exported.status.code(), Some(0), "{}", stderr(&exported));
    let text = String::from_utf8(exported.stdout).expect("utf-8");
    assert!(!text.contains(SECRET), "no secret in the export");
    let document: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(document["format"], "volley-batch-export/1");
    assert_eq!(document["batch"]["id"], batch);
    assert_eq!(document["batch"]["state"], "failed");
    let ops = document["ops"].as_array().expect("ops");
    assert_eq!(ops.len(), 6, "prep, 3 expansions, broken, last");
    let broken = ops
        .iter()
        .find(|op| op["id"] == "broken")
        .expect("broken op");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["stderr"]
            .as_str()
            .is_some_and(|stderr| stderr.contains("oops: broken on purpose")),
        "{broken}"
    );
    let each_a = ops.iter().find(|op| op["id"] == "each-a").expect("each-a");
    assert_eq!(each_a["group"], "each");
    assert_eq!(each_a["after"], serde_json::json!(["prep"]));
    let events = document["events"].as_array().expect("events");
    assert_eq!(
        events.last().map(|event| &event["kind"]),
        Some(&Value::from("batch_finished"))
    );
    let keys = document["memory"]["keys"].as_array().expect("memory keys");
    assert!(
        keys.iter()
            .any(|key| key["key"] == "result/prep" && key["value"].as_str().is_some()),
        "{keys:?}"
    );
    assert_eq!(document["graph"]["deps"].as_array().map(Vec::len), Some(6));
    // Each op's args, masked by the coordinator as the op panel masks them.
    let prep = ops.iter().find(|op| op["id"] == "prep").expect("prep");
    assert_eq!(prep["args"]["env"]["API_TOKEN"], "••••••", "{prep}");
    assert!(
        prep["args"]["cmd"]
            .as_str()
            .is_some_and(|cmd| cmd.contains("echo prepared")),
        "{prep}"
    );
    // A foreach item is data, not a secret: shown.
    assert_eq!(each_a["args"]["env"]["VOLLEY_ITEM"], "a", "{each_a}");
    assert_eq!(document["memory"]["scope"], "batch");

    // A batch of a shared namespace exports the namespace's keys.
    let shared_file = batch_file(cluster.root(), "shared.yaml", SHARED_BATCH);
    let (code, shared_report) = submit_watched_json(&cluster, &shared_file).await;
    assert_eq!(code, Some(0), "{shared_report}");
    let shared_batch = shared_report["batch_id"].as_str().expect("batch id");
    let shared_export = volley_with(ADMIN_TOKEN, &cluster.url, &["export", shared_batch]).await;
    assert_eq!(
        shared_export.status.code(),
        Some(0),
        "{}",
        stderr(&shared_export)
    );
    let shared_document: Value =
        serde_json::from_slice(&shared_export.stdout).expect("one JSON document");
    assert_eq!(shared_document["batch"]["namespace"], "team-x");
    assert_eq!(shared_document["graph"]["namespace"], "team-x");
    assert_eq!(shared_document["memory"]["scope"], "team-x");
    assert!(
        shared_document["memory"]["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|key| key["key"] == "shared/greeting" && key["value"] == "hello"),
        "{}",
        shared_document["memory"]
    );
    let saved = tempfile::tempdir().expect("temp dir");
    let export_path = saved.path().join("batch.json");
    std::fs::write(&export_path, &text).expect("write the export");

    // The cluster goes away.
    drop(cluster);

    // The file, served on its own.
    let mut server = volley()
        .args(["dashboard", "--file", export_path.to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("volley dashboard starts");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the URL in time")
        .expect("read stdout")
        .expect("a URL line");
    assert!(url.ends_with(&format!("/batches/{batch}")), "{url}");
    let address = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    let session = json_get(&address, "/api/session", None);
    assert_eq!(session["mode"], "file");
    assert_eq!(session["can_cancel"], false);
    let listed = json_get(&address, "/api/batches", None);
    assert_eq!(listed["batches"][0]["id"], batch.as_str(), "{listed}");
    assert_eq!(listed["batches"][0]["state"], "failed", "{listed}");
    let memory = json_get(&address, &format!("/api/batches/{batch}/memory"), None);
    assert_eq!(memory["keys"][0]["key"], "result/prep", "{memory}");
    for (path, live_answer) in paths.iter().zip(&live_answers) {
        let from_file = json_get(&address, path, None);
        assert_eq!(
            without(from_file, &["owner"]),
            without(live_answer.clone(), &["owner"]),
            "{path}"
        );
    }
    for (op, live_answer) in op_ids.iter().zip(&live_ops) {
        let from_file = json_get(&address, &format!("/api/batches/{batch}/ops/{op}"), None);
        // The gRPC API gives no attempt limits out.
        let ignored = ["max_attempts"];
        assert_eq!(
            without(from_file, &ignored),
            without(live_answer.clone(), &ignored),
            "op {op}"
        );
    }
    let (status, body) = http(
        &address,
        "GET",
        &format!("/api/batches/{batch}/ops/broken/logs?stream=stderr"),
        None,
    );
    assert_eq!(status, 200);
    assert!(body.contains("oops: broken on purpose"), "{body}");
    // The events stream ends at once, with the batch's end in it.
    let (status, body) = http(
        &address,
        "GET",
        &format!("/api/batches/{batch}/events"),
        None,
    );
    assert_eq!(status, 200);
    assert!(body.contains("batch_finished"), "{body}");
    let (status, _) = http(
        &address,
        "POST",
        &format!("/api/batches/{batch}/cancel"),
        None,
    );
    assert_eq!(status, 403, "read-only");
    let (status, _) = http(&address, "GET", "/api/batches/0193a2b4-0000/graph", None);
    assert_eq!(status, 404);
    // A page of another site whose name was rebound to 127.0.0.1 reads nothing.
    let status = status_as_host(&address, "evil.example", &format!("/api/batches/{batch}"));
    assert_eq!(status, 403, "a foreign Host is refused");
    let (status, page) = http(&address, "GET", &format!("/batches/{batch}"), None);
    assert_eq!(status, 200, "the page, with no login");
    assert!(page.contains("<script"), "{page}");

    // Another export opened as the page does when one is dropped on it:
    // only with the page's token, from this origin, checked as hostile.
    let csrf = session["csrf"].as_str().expect("a token").to_owned();
    assert_eq!(csrf.len(), 64, "{session}");
    let with_token = format!("X-Volley-Csrf: {csrf}\r\nX-Volley-File-Name: shared.json\r\n");
    let shared_text = serde_json::to_vec(&shared_document).expect("json");
    let (status, _) = post_file(&address, "", &shared_text);
    assert_eq!(status, 403, "no token");
    let (status, _) = post_file(&address, "X-Volley-Csrf: nope\r\n", &shared_text);
    assert_eq!(status, 403, "a wrong token");
    let (status, _) = post_file(
        &address,
        &format!("{with_token}Origin: http://evil.example\r\n"),
        &shared_text,
    );
    assert_eq!(status, 403, "another site");
    let (status, body) = post_file(&address, &with_token, b"{\"format\": 7");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("shared.json is not a batch export"), "{body}");
    let (status, body) = post_file(
        &address,
        &with_token,
        &text
            .replacen("volley-batch-export/1", "volley-batch-export/9", 1)
            .into_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("volley-batch-export/9"), "{body}");
    let (status, body) = post_file(&address, &with_token, &shared_text);
    assert_eq!(status, 200, "{body}");
    let opened: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(opened["id"], shared_batch, "{opened}");
    let listed = json_get(&address, "/api/batches", None);
    assert_eq!(
        listed["batches"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let memory = json_get(&address, "/api/namespaces/team-x/memory", None);
    assert_eq!(memory["keys"][0]["key"], "shared/greeting", "{memory}");
    let _ = server.start_kill();
    let _ = server.wait().await;

    // Hostile files.
    let dir = saved.path();
    let malformed = dir.join("malformed.json");
    std::fs::write(
        &malformed,
        "{\"format\": \"volley-batch-export/1\", \"ops\": [",
    )
    .expect("write");
    let message = refused(&["--file", malformed.to_str().expect("utf-8")]).await;
    assert!(message.contains("not a batch export"), "{message}");
    let wrong = dir.join("wrong.json");
    std::fs::write(
        &wrong,
        text.replacen("volley-batch-export/1", "volley-batch-export/9", 1),
    )
    .expect("write");
    let message = refused(&["--file", wrong.to_str().expect("utf-8")]).await;
    assert!(message.contains("volley-batch-export/9"), "{message}");
    let message = refused(&[
        "--file",
        export_path.to_str().expect("utf-8"),
        "--max-file-bytes",
        "100",
    ])
    .await;
    assert!(message.contains("more than the 100 bytes"), "{message}");
    let bad_index = dir.join("bad-index.json");
    let mut broken_document = document.clone();
    broken_document["graph"]["deps"][0] = serde_json::json!([99]);
    std::fs::write(&bad_index, broken_document.to_string()).expect("write");
    let message = refused(&["--file", bad_index.to_str().expect("utf-8")]).await;
    assert!(message.contains("graph.deps[0]"), "{message}");
    let missing = dir.join("missing.json");
    let message = refused(&["--file", missing.to_str().expect("utf-8")]).await;
    assert!(message.contains("cannot read"), "{message}");
    let message = refused(&[
        "--file",
        export_path.to_str().expect("utf-8"),
        "--listen",
        "0.0.0.0:0",
    ])
    .await;
    assert!(message.contains("--allow-remote"), "{message}");
}
