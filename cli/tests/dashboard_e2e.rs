//! The dashboard's HTTP side attacked as a stranger, another tenant or a
//! careless script would: a real `volley coordinator --dashboard-listen`
//! over a real Redis, with workers, spoken to in raw HTTP/1.1 (a tiny
//! client here, so every header byte is what the test wrote and read).

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cluster, batch_file, free_port, volley};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only a guard against hanging; never asserted on.
const DEADLINE: Duration = Duration::from_secs(60);

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {} {}", self.status, self.text()))
    }

    /// The session id a login set, if any.
    fn session_cookie(&self) -> Option<String> {
        self.all("set-cookie").iter().find_map(|cookie| {
            cookie
                .strip_prefix("volley_session=")
                .and_then(|rest| rest.split(';').next())
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        })
    }
}

/// A response's head: status, headers, and where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

/// Splits a response's head from its body.
fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .split(' ')
        .nth(1)?
        .parse()
        .expect("a numeric status");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Some((status, headers, end + 4))
}

/// The complete chunks of a chunked body so far, and whether the last one came.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|window| window == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            return (body, true);
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            return (body, false);
        }
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// Sends one request (`Connection: close`) and reads the answer; with
/// `stop_at`, stops reading once the body holds that text (an open stream).
async fn exchange(
    address: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    stop_at: Option<&str>,
) -> Reply {
    let work = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send head");
        stream.write_all(body).await.expect("send body");
        let mut raw = Vec::new();
        let mut buffer = [0u8; 16384];
        loop {
            let read = stream.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                break;
            }
            raw.extend_from_slice(&buffer[..read]);
            if let (Some(stop), Some((_, headers, at))) = (stop_at, parse_head(&raw)) {
                let chunked = headers.iter().any(|(key, value)| {
                    key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
                });
                let so_far = if chunked {
                    dechunk(&raw[at..]).0
                } else {
                    raw[at..].to_vec()
                };
                if String::from_utf8_lossy(&so_far).contains(stop) {
                    break;
                }
            }
        }
        let (status, headers, at) = parse_head(&raw)
            .unwrap_or_else(|| panic!("no HTTP head: {:?}", String::from_utf8_lossy(&raw)));
        let chunked = headers.iter().any(|(key, value)| {
            key.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
        });
        let body = if chunked {
            dechunk(&raw[at..]).0
        } else {
            raw[at..].to_vec()
        };
        Reply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .unwrap_or_else(|_| panic!("{method} {target} hung"))
}

async fn get(address: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    exchange(address, "GET", target, headers, b"", None).await
}

async fn post(address: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    exchange(address, "POST", target, headers, body, None).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn cookie(session: &str) -> String {
    format!("volley_session={session}")
}

/// A JSON error answer with this status and word.
fn assert_error(reply: &Reply, status: u16, word: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {:.300}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json")),
        "{what}: {:?}",
        reply.headers
    );
    assert_eq!(reply.json()["error"], word, "{what}: {}", reply.text());
}

/// A cluster with its dashboard on a free loopback port, answering.
async fn dashboard_cluster(workers: usize) -> (Cluster, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start_with(workers, &["--dashboard-listen", &address]).await;
    wait_until_serving(&address).await;
    (cluster, address)
}

async fn wait_until_serving(address: &str) {
    wait_for("the dashboard answers", async || {
        let stream = TcpStream::connect(address).await.ok()?;
        drop(stream);
        (get(address, "/assets/app.js", &[]).await.status == 200).then_some(())
    })
    .await;
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `volley ARGS` against the cluster with `token`.
async fn volley_as(cluster: &Cluster, token: &str, args: &[&str]) -> Output {
    volley()
        .args(args)
        .env("VOLLEY_COORDINATOR", &cluster.url)
        .env("VOLLEY_TOKEN", token)
        .current_dir(cluster.root())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `volley token create ARGS` as the admin: the token.
async fn create_token(cluster: &Cluster, args: &[&str]) -> String {
    let mut full = vec!["token", "create"];
    full.extend_from_slice(args);
    let output = volley_as(cluster, ADMIN_TOKEN, &full).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

/// Submits a batch that waits on a memory key nobody writes: it runs until
/// cancelled. Its id.
async fn submit_holding(cluster: &Cluster, token: &str, name: &str) -> String {
    let file = batch_file(
        cluster.root(),
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nallow_unwritten: true\nops:\n  - {{id: hold, kind: echo, args: {{text: hi}}, wait_for: [go]}}\n"
        ),
    );
    let output = volley_as(cluster, token, &["submit", file.to_str().expect("utf-8")]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stdout(&output).trim().to_owned()
}

/// Logs in with the link `volley up` prints: the session id.
async fn login(address: &str, token: &str) -> String {
    let reply = get(address, &format!("/login?token={token}&next=/"), &[]).await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    reply.session_cookie().expect("a session cookie")
}

/// A batch's state through the API, as the admin.
async fn batch_state(address: &str, batch: &str) -> String {
    let reply = get(
        address,
        &format!("/api/batches/{batch}"),
        &[("Authorization", &bearer(ADMIN_TOKEN))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["state"].as_str().expect("a state").to_owned()
}

/// Every API route that names a batch, with `id` in it.
fn batch_routes(id: &str) -> Vec<String> {
    [
        "",
        "/graph",
        "/graph?expand=g:x",
        "/ops",
        "/ops/hold",
        "/ops/hold/logs",
        "/timeline",
        "/events",
        "/memory",
    ]
    .iter()
    .map(|tail| format!("/api/batches/{id}{tail}"))
    .collect()
}

#[tokio::test]
async fn without_a_session_the_api_is_401_pages_go_to_login_and_logins_are_strict() {
    let (cluster, address) = dashboard_cluster(0).await;

    // No session: every API path is a JSON 401, every page a 303 to log in.
    let mut api = batch_routes("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b");
    api.extend(
        [
            "/api/session",
            "/api/batches",
            "/api/workers",
            "/api/namespaces/shared/memory",
        ]
        .map(str::to_owned),
    );
    for path in &api {
        let reply = get(&address, path, &[]).await;
        assert_error(&reply, 401, "unauthenticated", path);
        assert!(reply.json()["message"].is_string(), "{path}");
    }
    let cancel = post(&address, "/api/batches/abc/cancel", &[], b"").await;
    assert_error(&cancel, 401, "unauthenticated", "cancel");
    // Errors carry the same hardening headers as pages.
    assert_eq!(cancel.header("x-frame-options"), Some("DENY"));
    assert_eq!(cancel.header("referrer-policy"), Some("no-referrer"));
    assert!(
        cancel
            .header("content-security-policy")
            .is_some_and(|policy| policy.contains("frame-ancestors 'none'")),
        "{:?}",
        cancel.headers
    );
    // A bad bearer token is a 401, never a fall back to no one.
    let bad_bearer = get(
        &address,
        "/api/batches",
        &[("Authorization", "Bearer vly_nope")],
    )
    .await;
    assert_error(&bad_bearer, 401, "unauthenticated", "bad bearer");
    // A forged cookie is no session either.
    let forged = get(
        &address,
        "/api/batches",
        &[("Cookie", &cookie(&"0".repeat(64)))],
    )
    .await;
    assert_error(&forged, 401, "unauthenticated", "forged cookie");
    for (page, next) in [
        ("/", "/"),
        ("/workers", "/workers"),
        ("/batches/X", "/batches/X"),
        (
            "/batches/X?tab=timeline&op=a",
            "/batches/X%3Ftab%3Dtimeline%26op%3Da",
        ),
    ] {
        let reply = get(&address, page, &[]).await;
        assert_eq!(reply.status, 303, "{page}");
        assert_eq!(
            reply.header("location"),
            Some(format!("/login?next={next}").as_str()),
            "{page}"
        );
        assert!(reply.all("set-cookie").is_empty(), "{page}");
    }
    let script = get(&address, "/assets/app.js", &[]).await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/javascript")),
        "{:?}",
        script.headers
    );
    assert_eq!(script.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(script.header("x-frame-options"), Some("DENY"));

    // The login link: the cookie's flags exactly, then on to `next`.
    let reply = get(
        &address,
        &format!("/login?token={ADMIN_TOKEN}&next=%2Fbatches%2Fabc%3Ftab%3Dops"),
        &[],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/batches/abc?tab=ops"));
    let set_cookies = reply.all("set-cookie");
    assert_eq!(set_cookies.len(), 1, "{set_cookies:?}");
    let attributes: Vec<&str> = set_cookies[0].split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("volley_session="));
    assert!(attributes[0].len() >= "volley_session=".len() + 32);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(&flag), "{flag} in {set_cookies:?}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP: {set_cookies:?}"
    );
    assert!(
        attributes
            .iter()
            .all(|attribute| !attribute.starts_with("Domain")),
        "{set_cookies:?}"
    );
    let session = reply.session_cookie().expect("a session");
    let me = get(&address, "/api/session", &[("Cookie", &cookie(&session))]).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["role"], "admin");
    assert_eq!(me.json()["auth"], true);
    assert!(
        me.json()["csrf"]
            .as_str()
            .is_some_and(|csrf| csrf.len() >= 16)
    );
    assert_eq!(
        get(&address, "/", &[("Cookie", &cookie(&session))])
            .await
            .status,
        200
    );

    // `next` that leaves the site, or smuggles a header, goes to `/`.
    for hostile in [
        "%2F%2Fevil.example",
        "%2F%2Fevil.example%2Fpath",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "%2F%5C%2Fevil.example",
        "javascript%3Aalert(1)",
        "%2Fx%0D%0ASet-Cookie%3A%20planted%3D1",
        "%2Fx%0ALocation%3A%20https%3A%2F%2Fevil.example",
        "",
    ] {
        let reply = get(
            &address,
            &format!("/login?token={ADMIN_TOKEN}&next={hostile}"),
            &[],
        )
        .await;
        assert_eq!(reply.status, 303, "{hostile}");
        assert_eq!(reply.header("location"), Some("/"), "{hostile}");
        let cookies = reply.all("set-cookie");
        assert_eq!(cookies.len(), 1, "{hostile}: {cookies:?}");
        assert!(!reply.text().contains("evil"), "{hostile}");
    }

    // A bad token: 401, the login page, no cookie.
    for bad in ["vly_nope", "", &"x".repeat(5000)] {
        let reply = get(&address, &format!("/login?token={bad}&next=/"), &[]).await;
        assert_eq!(reply.status, 401, "{bad:.20}");
        assert!(reply.all("set-cookie").is_empty(), "{bad:.20}");
    }
    // A worker's token is not a dashboard's.
    let worker_token = create_token(&cluster, &["--role", "worker"]).await;
    let reply = get(
        &address,
        &format!("/login?token={worker_token}&next=/"),
        &[],
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.all("set-cookie").is_empty());
    let as_worker = get(
        &address,
        "/api/batches",
        &[("Authorization", &bearer(&worker_token))],
    )
    .await;
    assert_error(&as_worker, 403, "forbidden", "worker bearer");

    // POST /login: from this site (or no Origin) it logs in; from another, 403.
    let form = format!("token={ADMIN_TOKEN}&next=%2Fworkers");
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let own_origin = format!("http://{address}");
    for origin in [None, Some(own_origin.as_str())] {
        let mut headers = vec![form_type];
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        let reply = post(&address, "/login", &headers, form.as_bytes()).await;
        assert_eq!(reply.status, 303, "{origin:?}: {}", reply.text());
        assert_eq!(reply.header("location"), Some("/workers"));
        assert!(reply.session_cookie().is_some(), "{origin:?}");
    }
    for origin in [
        "http://evil.example",
        "https://evil.example",
        "null-ish",
        &format!("http://{address}.evil.example"),
    ] {
        let reply = post(
            &address,
            "/login",
            &[form_type, ("Origin", origin)],
            form.as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 403, "{origin}: {}", reply.text());
        assert!(reply.all("set-cookie").is_empty(), "{origin}");
    }

    // Logging out ends the session here, not just in the browser.
    let logout = post(&address, "/logout", &[("Cookie", &cookie(&session))], b"").await;
    assert_eq!(logout.status, 303);
    assert!(
        logout
            .all("set-cookie")
            .iter()
            .any(|value| value.contains("Max-Age=0")),
        "{:?}",
        logout.headers
    );
    let after = get(&address, "/api/session", &[("Cookie", &cookie(&session))]).await;
    assert_error(&after, 401, "unauthenticated", "after logout");
}

#[tokio::test]
async fn a_tenant_sees_only_its_batches_cancels_need_csrf_and_a_revoked_token_ends_its_session() {
    let (cluster, address) = dashboard_cluster(1).await;
    let tenant_a = create_token(
        &cluster,
        &["--role", "client", "--tenant", "a", "--name", "a"],
    )
    .await;
    let tenant_b = create_token(&cluster, &["--role", "client", "--tenant", "b"]).await;
    let batch_a = submit_holding(&cluster, &tenant_a, "of-a").await;
    let batch_b = submit_holding(&cluster, &tenant_b, "of-b").await;

    let session_a = login(&address, &tenant_a).await;
    let as_a = cookie(&session_a);
    let me = get(&address, "/api/session", &[("Cookie", &as_a)])
        .await
        .json();
    assert_eq!(me["tenant"], "a");
    assert_eq!(me["role"], "client");
    let csrf = me["csrf"].as_str().expect("csrf").to_owned();

    let listed = get(&address, "/api/batches", &[("Cookie", &as_a)]).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let ids: Vec<Value> = listed.json()["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|row| row["id"].clone())
        .collect();
    assert_eq!(ids, vec![Value::from(batch_a.as_str())]);
    assert!(!listed.text().contains("of-b"));

    // b's batch does not exist for a, on every route (and a's does).
    for path in batch_routes(&batch_b) {
        let reply = exchange(
            &address,
            "GET",
            &path,
            &[("Cookie", &as_a)],
            b"",
            Some("\n\n"),
        )
        .await;
        assert_error(&reply, 404, "not_found", &path);
        assert!(!reply.text().contains("of-b"), "{path}");
    }
    for path in batch_routes(&batch_a) {
        let reply = exchange(
            &address,
            "GET",
            &path,
            &[("Cookie", &as_a)],
            b"",
            Some("\n\n"),
        )
        .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    let cancel_b = post(
        &address,
        &format!("/api/batches/{batch_b}/cancel"),
        &[("Cookie", &as_a), ("X-Volley-Csrf", &csrf)],
        b"",
    )
    .await;
    assert_error(&cancel_b, 404, "not_found", "cancel b's as a");
    assert_eq!(batch_state(&address, &batch_b).await, "running");

    // The admin sees both.
    let admin = get(
        &address,
        "/api/batches",
        &[("Authorization", &bearer(ADMIN_TOKEN))],
    )
    .await
    .json();
    let tenants: Vec<&str> = admin["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .filter_map(|row| row["tenant"].as_str())
        .collect();
    assert!(tenants.contains(&"a") && tenants.contains(&"b"), "{admin}");

    // A change needs the session's CSRF token: none, or a wrong one, is 403
    // and the batch runs on.
    let cancel_a = format!("/api/batches/{batch_a}/cancel");
    let other_session = login(&address, &tenant_a).await;
    let other_csrf = get(
        &address,
        "/api/session",
        &[("Cookie", &cookie(&other_session))],
    )
    .await
    .json()["csrf"]
        .as_str()
        .expect("csrf")
        .to_owned();
    assert_ne!(other_csrf, csrf, "each session its own token");
    for header in [
        None,
        Some(""),
        Some("wrong"),
        Some(&csrf[..csrf.len() - 1]),
        Some(other_csrf.as_str()),
    ] {
        let mut headers = vec![("Cookie", as_a.as_str())];
        if let Some(value) = header {
            headers.push(("X-Volley-Csrf", value));
        }
        let reply = post(&address, &cancel_a, &headers, b"").await;
        assert_error(&reply, 403, "forbidden", &format!("csrf {header:?}"));
    }
    assert_eq!(batch_state(&address, &batch_a).await, "running");
    let status = volley_as(
        &cluster,
        &tenant_a,
        &["status", &batch_a, "--output", "json"],
    )
    .await;
    assert!(stdout(&status).contains("running"), "{}", stdout(&status));
    // The right one cancels.
    let reply = post(
        &address,
        &cancel_a,
        &[("Cookie", &as_a), ("X-Volley-Csrf", &csrf)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["cancelled"], true);
    wait_for("a's batch is cancelled", async || {
        (batch_state(&address, &batch_a).await == "cancelled").then_some(())
    })
    .await;
    // A script with a bearer token has no CSRF token to send.
    let reply = post(
        &address,
        &format!("/api/batches/{batch_b}/cancel"),
        &[("Authorization", &bearer(&tenant_b))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_for("b's batch is cancelled", async || {
        (batch_state(&address, &batch_b).await == "cancelled").then_some(())
    })
    .await;

    // Revoking a's token ends its sessions within a couple of seconds.
    let listed = volley_as(&cluster, ADMIN_TOKEN, &["token", "ls", "--output", "json"]).await;
    let tokens: Value = serde_json::from_slice(&listed.stdout).expect("json");
    let id = tokens
        .as_array()
        .and_then(|tokens| tokens.iter().find(|token| token["name"] == "a"))
        .and_then(|token| token["id"].as_str())
        .expect("a's token is listed")
        .to_owned();
    let revoked = volley_as(&cluster, ADMIN_TOKEN, &["token", "revoke", &id]).await;
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    let since = tokio::time::Instant::now();
    wait_for("the revoked token's session ends", async || {
        (get(&address, "/api/batches", &[("Cookie", &as_a)])
            .await
            .status
            == 401)
            .then_some(())
    })
    .await;
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "revocation took {:?}",
        since.elapsed()
    );
    for path in ["/api/session", "/api/batches"] {
        let reply = get(&address, path, &[("Cookie", &as_a)]).await;
        assert_error(&reply, 401, "unauthenticated", path);
        let reply = get(&address, path, &[("Cookie", &cookie(&other_session))]).await;
        assert_error(&reply, 401, "unauthenticated", path);
    }
    // And it cannot log in again.
    let reply = get(&address, &format!("/login?token={tenant_a}&next=/"), &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.all("set-cookie").is_empty());
}

const WIDE: &str = r#"name: wide
ops:
  - id: setup
    kind: shell
    args: {cmd: "echo set up", env: {API_TOKEN: hunter2-secret, PLAIN: visible-value}}
  - id: test
    kind: echo
    foreach: {range: [1, 500]}
    after: [setup]
    args: {text: "test ${item}"}
  - id: report
    kind: echo
    after: [test]
    args: {text: done}
  - id: broken
    kind: shell
    args: {cmd: "echo boom >&2; exit 3"}
"#;

/// The events of an SSE body: (`id:`, the data's JSON), in order.
fn sse_events(body: &str) -> Vec<(u64, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id:") {
                    id = Some(value.trim().parse::<u64>().expect("a numeric id"));
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(value.trim()).expect("JSON data"));
                }
            }
            match (id, data) {
                (Some(id), Some(data)) => Some((id, data)),
                (None, Some(data)) => panic!("an event without an id: {data}"),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn a_500_op_foreach_is_folded_paged_streamed_and_masked_and_hostile_input_is_404() {
    let (cluster, address) = dashboard_cluster(2).await;
    let file = batch_file(cluster.root(), "wide.yaml", WIDE);
    let (_, report) = common::submit_watched_json(&cluster, &file).await;
    let batch = report["batch_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a batch id in {report}"))
        .to_owned();
    let admin = bearer(ADMIN_TOKEN);
    let auth = [("Authorization", admin.as_str())];
    let api = |tail: &str| format!("/api/batches/{batch}{tail}");

    // The graph: 500 expansions are one node.
    let graph = get(&address, &api("/graph"), &auth).await;
    assert_eq!(graph.status, 200, "{}", graph.text());
    let graph = graph.json();
    assert_eq!(graph["op_count"], 503, "{graph}");
    let nodes = graph["nodes"].as_array().expect("nodes");
    assert!(nodes.len() < 10, "{graph}");
    let group = nodes
        .iter()
        .find(|node| node["count"] == 500)
        .unwrap_or_else(|| panic!("a node of 500 in {graph}"));
    assert_eq!(group["id"], "g:test", "{group}");
    assert_eq!(group["group"], "test", "{group}");
    assert_eq!(group["states"]["succeeded"], 500, "{group}");
    assert!(
        graph["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|edge| edge["from"] == "o:setup" && edge["to"] == "g:test"),
        "{graph}"
    );
    let expanded = get(&address, &api("/graph?expand=g:test"), &auth)
        .await
        .json();
    let expanded_nodes = expanded["nodes"].as_array().expect("nodes");
    assert!(
        expanded_nodes.iter().any(|node| node["id"] == "o:test-1"),
        "{expanded}"
    );
    assert!(expanded_nodes.len() <= 510, "{}", expanded_nodes.len());
    // 10,000 keys to expand (most of them nonsense) is still one small
    // answer (short keys: a URI stops at 64 KiB, see below).
    let keys: Vec<String> = (0..10_000).map(|key| key.to_string()).collect();
    let many = get(
        &address,
        &api(&format!("/graph?expand=g:test,{}", keys.join(","))),
        &auth,
    )
    .await;
    assert_eq!(many.status, 200, "{}", many.text());
    assert!(many.json()["nodes"].as_array().expect("nodes").len() <= 510);
    let longer: Vec<String> = (0..10_000).map(|key| format!("g:key-{key}")).collect();
    let too_long = get(
        &address,
        &api(&format!("/graph?expand={}", longer.join(","))),
        &auth,
    )
    .await;
    assert_eq!(
        too_long.status, 414,
        "a URI past 64 KiB is refused before any handler"
    );

    // Ops: pages, a state filter, a search, clamped limits.
    let page = get(&address, &api("/ops?offset=0&limit=100"), &auth)
        .await
        .json();
    assert_eq!(page["total"], 503, "{page}");
    assert_eq!(page["ops"].as_array().expect("ops").len(), 100);
    let tail = get(&address, &api("/ops?offset=450&limit=100"), &auth)
        .await
        .json();
    assert_eq!(tail["ops"].as_array().expect("ops").len(), 53, "{tail}");
    assert_eq!(tail["offset"], 450);
    let failed = get(&address, &api("/ops?state=failed"), &auth).await.json();
    assert_eq!(failed["total"], 1, "{failed}");
    assert_eq!(failed["ops"][0]["id"], "broken");
    let succeeded = get(&address, &api("/ops?state=succeeded&limit=5"), &auth)
        .await
        .json();
    assert_eq!(succeeded["total"], 502, "{succeeded}");
    let searched = get(&address, &api("/ops?q=test-49&limit=1000"), &auth)
        .await
        .json();
    assert_eq!(
        searched["total"], 11,
        "test-49 and test-490..499: {searched}"
    );
    for (limit, most) in [("100000000", 503), ("18446744073709551615", 503), ("0", 1)] {
        let reply = get(&address, &api(&format!("/ops?limit={limit}")), &auth).await;
        assert_eq!(reply.status, 200, "{limit}: {}", reply.text());
        assert_eq!(
            reply.json()["ops"].as_array().expect("ops").len(),
            most,
            "{limit}"
        );
    }
    let far = get(&address, &api("/ops?offset=18446744073709551615"), &auth).await;
    assert_eq!(far.status, 200, "{}", far.text());
    assert!(far.json()["ops"].as_array().expect("ops").is_empty());
    for limit in ["100000000", "4294967296", "18446744073709551615"] {
        let reply = get(&address, &format!("/api/batches?limit={limit}"), &auth).await;
        assert_eq!(reply.status, 200, "{limit}: {}", reply.text());
    }
    for limit in ["-1", "abc", "1e9", "%00"] {
        let reply = get(&address, &api(&format!("/ops?limit={limit}")), &auth).await;
        assert!(reply.status < 500, "{limit}: {}", reply.status);
        assert_error(&reply, 400, "invalid", limit);
    }

    // The timeline in pages until `next` is null.
    let mut spans = Vec::new();
    let mut offset = Some(0u64);
    while let Some(at) = offset {
        let reply = get(
            &address,
            &api(&format!("/timeline?offset={at}&limit=150")),
            &auth,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let timeline = reply.json();
        assert_eq!(timeline["total"], 503, "{timeline}");
        spans.extend(timeline["spans"].as_array().expect("spans").iter().cloned());
        offset = timeline["next"].as_u64();
        assert!(spans.len() <= 503);
    }
    assert_eq!(spans.len(), 503);
    let mut indexes: Vec<u64> = spans
        .iter()
        .map(|span| span[0].as_u64().expect("index"))
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 503, "every op once");
    let workers = get(&address, &api("/timeline?limit=1"), &auth).await.json();
    assert_eq!(workers["next"], 1);
    let huge = get(
        &address,
        &api("/timeline?limit=18446744073709551615"),
        &auth,
    )
    .await
    .json();
    assert_eq!(huge["spans"].as_array().expect("spans").len(), 503);
    assert!(huge["next"].is_null());
    let past = get(
        &address,
        &api("/timeline?offset=18446744073709551615"),
        &auth,
    )
    .await;
    assert_eq!(past.status, 200, "{}", past.text());
    assert!(past.json()["spans"].as_array().expect("spans").is_empty());
    assert!(past.json()["next"].is_null());

    // An op panel masks env values, and keeps the command.
    let setup = get(&address, &api("/ops/setup"), &auth).await;
    assert_eq!(setup.status, 200, "{}", setup.text());
    assert!(!setup.text().contains("hunter2"), "{}", setup.text());
    assert!(!setup.text().contains("visible-value"), "{}", setup.text());
    let setup = setup.json();
    assert_eq!(setup["args"]["cmd"], "echo set up");
    assert_eq!(setup["args"]["env"]["API_TOKEN"], "••••••");
    assert_eq!(setup["state"], "succeeded");
    let broken = get(&address, &api("/ops/broken"), &auth).await.json();
    assert_eq!(broken["state"], "failed", "{broken}");
    let logs = get(&address, &api("/ops/broken/logs?stream=stderr"), &auth).await;
    assert_eq!(logs.status, 200);
    assert!(logs.text().contains("boom"), "{}", logs.text());
    assert!(
        logs.header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{:?}",
        logs.headers
    );

    // The events stream: every event has an id; a reconnect resumes after it.
    let stream = exchange(
        &address,
        "GET",
        &api("/events"),
        &auth,
        b"",
        Some("batch_finished"),
    )
    .await;
    assert_eq!(stream.status, 200, "{}", stream.text());
    assert!(
        stream
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    let events = sse_events(&stream.text());
    assert!(events.len() > 1000, "{} events", events.len());
    for (id, data) in &events {
        assert_eq!(data["seq"].as_u64(), Some(*id), "{data}");
    }
    assert!(
        events.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "ids strictly increase"
    );
    assert_eq!(events[0].1["kind"], "batch_submitted");
    assert_eq!(events.last().expect("events").1["kind"], "batch_finished");
    let resume_after = events[events.len() / 2].0;
    let resume_text = resume_after.to_string();
    let resumed = exchange(
        &address,
        "GET",
        &api("/events"),
        &[("Authorization", &admin), ("Last-Event-ID", &resume_text)],
        b"",
        Some("batch_finished"),
    )
    .await;
    let resumed = sse_events(&resumed.text());
    let expected: Vec<u64> = events
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id > resume_after)
        .collect();
    let got: Vec<u64> = resumed.iter().map(|(id, _)| *id).collect();
    assert_eq!(got, expected, "resumed after {resume_after}, no duplicates");
    // The stream of a finished batch ends after `batch_finished` (read to
    // the end of the connection, no stop word).
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(&address, "GET", &api("/events"), &auth, b"", None),
    )
    .await
    .expect("the events stream of a finished batch ends");
    let ended = sse_events(&ended.text());
    assert_eq!(ended.len(), events.len());
    assert_eq!(ended.last().expect("events").1["kind"], "batch_finished");
    // `?after=` does the same; the header wins over it.
    let by_query = exchange(
        &address,
        "GET",
        &api(&format!("/events?after={resume_after}")),
        &auth,
        b"",
        Some("batch_finished"),
    )
    .await;
    let by_query: Vec<u64> = sse_events(&by_query.text())
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(by_query, expected);
    let both = exchange(
        &address,
        "GET",
        &api("/events?after=0"),
        &[("Authorization", &admin), ("Last-Event-ID", &resume_text)],
        b"",
        Some("batch_finished"),
    )
    .await;
    let both: Vec<u64> = sse_events(&both.text()).iter().map(|(id, _)| *id).collect();
    assert_eq!(both, expected, "Last-Event-ID wins over ?after=");

    // Hostile ids: 404 JSON on every route, never a 500.
    let long = "x".repeat(5000);
    let hostile_ids = [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..",
        long.as_str(),
        "%00",
        "abc%00def",
        "%E2%9C%93%F0%9F%98%80",
        "%C3%A9t%C3%A9",
        "a%20b",
        "%0D%0ASet-Cookie:x=1",
        "%25",
        "%FF%FE",
    ];
    for id in hostile_ids {
        for path in batch_routes(id) {
            let reply = get(&address, &path, &auth).await;
            assert_error(&reply, 404, "not_found", &format!("{path:.80}"));
            assert!(reply.all("set-cookie").is_empty());
        }
        let reply = post(&address, &format!("/api/batches/{id}/cancel"), &auth, b"").await;
        assert_error(&reply, 404, "not_found", &format!("cancel {id:.80}"));
        // An unknown op of a real batch.
        for tail in ["", "/logs"] {
            let path = api(&format!("/ops/{id}{tail}"));
            let reply = get(&address, &path, &auth).await;
            assert_error(&reply, 404, "not_found", &format!("{path:.120}"));
        }
        let reply = get(&address, &format!("/api/namespaces/{id}/memory"), &auth).await;
        // A namespace is a name the coordinator checks as gRPC does (a
        // slash is allowed): an empty one, or a JSON refusal, never a 500.
        let namespace = reply.json();
        match reply.status {
            200 => assert_eq!(namespace["keys"], serde_json::json!([]), "{id:.80}"),
            400 | 404 => assert!(namespace["error"].is_string(), "namespace {id:.80}"),
            other => panic!("namespace {id:.80}: {other} {namespace}"),
        }
        let page = get(&address, &format!("/batches/{id}"), &auth).await;
        assert!(page.status < 500, "page {id:.80}: {}", page.status);
    }
    // Paths that are no route at all.
    for path in [
        "/api/nothing",
        "/api/batches/a/b/c/d/e",
        "/assets/..%2FCargo.toml",
        "/%2e%2e/etc/passwd",
    ] {
        let reply = get(&address, path, &auth).await;
        assert_eq!(reply.status, 404, "{path}");
    }
}

#[tokio::test]
async fn auth_none_serves_the_dashboard_on_loopback_only() {
    let redis = volley_testkit::RedisServer::start().expect("redis-server starts");
    let grpc = format!("127.0.0.1:{}", free_port());
    let open = volley()
        .args([
            "coordinator",
            "--auth",
            "none",
            "--listen",
            &grpc,
            "--dashboard-listen",
            &format!("0.0.0.0:{}", free_port()),
        ])
        .env("VOLLEY_REDIS", redis.url())
        .env_remove("VOLLEY_ADMIN_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley runs");
    assert_eq!(open.status.code(), Some(2), "{}", stderr(&open));
    assert!(
        stderr(&open).contains("--dashboard-listen"),
        "{}",
        stderr(&open)
    );

    let address = format!("127.0.0.1:{}", free_port());
    let _coordinator = volley()
        .args([
            "coordinator",
            "--auth",
            "none",
            "--listen",
            &grpc,
            "--dashboard-listen",
            &address,
        ])
        .env("VOLLEY_REDIS", redis.url())
        .env("VOLLEY_LOG", "warn")
        .env_remove("VOLLEY_ADMIN_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coordinator starts");
    wait_until_serving(&address).await;
    let page = get(&address, "/", &[]).await;
    assert_eq!(page.status, 200, "no login on loopback without auth");
    let me = get(&address, "/api/session", &[]).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["auth"], false);
    let csrf = me.json()["csrf"].as_str().expect("csrf").to_owned();
    assert!(!csrf.is_empty());
    assert_eq!(get(&address, "/api/batches", &[]).await.status, 200);
    // Even without auth a change needs the CSRF token: another site's page
    // could otherwise post to localhost.
    let cancel = post(&address, "/api/batches/nope/cancel", &[], b"").await;
    assert_error(&cancel, 403, "forbidden", "cancel without csrf");
    let cancel = post(
        &address,
        "/api/batches/nope/cancel",
        &[("X-Volley-Csrf", &csrf)],
        b"",
    )
    .await;
    assert_error(&cancel, 404, "not_found", "cancel with csrf");
}
