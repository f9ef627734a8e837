//! Volley's web dashboard: the batch list, a batch's DAG, timeline, ops and
//! memory, workers — served by the coordinator's own process
//! (`volley coordinator --dashboard-listen ADDR`) from the same store, so
//! any coordinator shows every batch.
//!
//! The pages are static files embedded at build time (`assets/`, no Node
//! needed) that read a JSON API (`api`, contract in
//! docs/dashboard-api.md). Every page and API call needs a session made
//! from a token (`session`), except with `--auth none`.
//!
//! The same pages and API also show one batch exported with `volley
//! export` (`volley dashboard --file`, [`file_router`]): read-only, no
//! cluster and no login, since the file is on the reader's machine.
//!
//! # Layout
//! - `session` — login, cookies, CSRF.
//! - `source` — where the data comes from: a coordinator or an export.
//! - `api` — the JSON API and the events stream.
//! - `graph` — a batch's DAG folded to a drawable size.
//! - `export` — the export format, and reading one back.

mod api;
pub mod export;
mod graph;
mod session;
mod source;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use volley_coordinator::Coordinator;

use crate::api::ApiError;
use crate::export::Export;
use crate::session::{Sessions, safe_next};
use crate::source::Source;

/// Every embedded file: its path under `/assets/`, bytes, content type.
static ASSETS: &[(&str, &[u8], &str)] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// What the handlers share.
pub struct App {
    source: Source,
    sessions: Sessions,
    /// Recently read op rows, so one page load reads a batch once.
    rows: api::RowsCache,
}

/// How the dashboard is served.
#[derive(Clone, Debug, Default)]
pub struct DashboardConfig {
    /// Mark cookies `Secure` (the dashboard is reached over TLS, e.g.
    /// behind an ingress that terminates it).
    pub secure_cookies: bool,
}

/// The dashboard's routes over `coordinator`.
pub fn router(coordinator: Coordinator, config: &DashboardConfig) -> Router {
    routes(Source::Live(coordinator), config)
}

/// How a file dashboard is served.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// A request must name a loopback host: there is no login, so a page
    /// of another site that rebinds its DNS name to 127.0.0.1 must not
    /// read the batches.
    pub loopback_only: bool,
    /// The most bytes of a file dropped on the page.
    pub max_file_bytes: u64,
}

/// The dashboard's routes over exported batches, read-only: `first`, if
/// any, and those dropped on the page since (`POST /api/files`, the one
/// write a file dashboard takes: it only adds a file to what it shows, and
/// a live dashboard has no such route).
pub fn file_router(first: Option<Export>, config: &FileConfig) -> Router {
    let files = source::Files::new(first, config.max_file_bytes, session::random_token());
    let loopback_only = config.loopback_only;
    let router = routes(Source::File(files), &DashboardConfig::default());
    if loopback_only {
        router.layer(axum::middleware::from_fn(loopback_host))
    } else {
        router
    }
}

/// Refuses a request whose `Host` is not a loopback name or address.
async fn loopback_host(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if is_loopback_host(host) {
        next.run(request).await
    } else {
        ApiError::Forbidden(
            "this dashboard serves a file to this machine only: open it at 127.0.0.1 or localhost"
                .to_owned(),
        )
        .into_response()
    }
}

/// `127.0.0.1:8080`, `localhost`, `[::1]:80`: a loopback host, any port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn routes(source: Source, config: &DashboardConfig) -> Router {
    let file_limit = match &source {
        Source::File(files) => Some(files.max_bytes),
        Source::Live(_) => None,
    };
    let app = Arc::new(App {
        source,
        sessions: Sessions::new(config.secure_cookies),
        rows: api::RowsCache::default(),
    });
    let router = Router::new();
    // Only a file dashboard opens dropped files: a live one takes no file.
    let router = match file_limit {
        // The handler reads the body itself, up to the file limit.
        Some(_) => router.route("/api/files", post(api::open_file)),
        None => router,
    };
    router
        .route("/", get(page))
        .route("/batches/{id}", get(page))
        .route("/workers", get(page))
        .route("/namespaces/{ns}", get(page))
        .route("/login", get(login_page).post(login_form))
        .route("/logout", post(logout))
        .route("/assets/{*path}", get(asset))
        .route("/api/session", get(api::session))
        .route("/api/batches", get(api::batches))
        .route("/api/batches/{id}", get(api::batch))
        .route("/api/batches/{id}/graph", get(api::graph))
        .route("/api/batches/{id}/ops", get(api::ops))
        .route("/api/batches/{id}/ops/{op}", get(api::op))
        .route("/api/batches/{id}/ops/{op}/logs", get(api::op_logs))
        .route("/api/batches/{id}/timeline", get(api::timeline))
        .route("/api/batches/{id}/events", get(api::events))
        .route("/api/batches/{id}/memory", get(api::batch_memory))
        .route("/api/batches/{id}/cancel", post(api::cancel))
        .route("/api/namespaces/{ns}/memory", get(api::namespace_memory))
        .route("/api/workers", get(api::workers))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    config: DashboardConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "dashboard listening");
    axum::serve(listener, router(coordinator, &config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves exported batches on `listener` until `shutdown` resolves (see
/// [`file_router`]).
pub async fn serve_file(
    listener: TcpListener,
    first: Option<Export>,
    config: FileConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, batch = first.as_ref().map(Export::batch_id), "dashboard serving exported batches");
    axum::serve(listener, file_router(first, &config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Headers every answer carries: no framing by other sites, no sniffing,
/// no referrer (a login link holds a token), scripts only from here.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn index_html() -> Response {
    asset_response("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

fn asset_response(path: &str) -> Option<Response> {
    let (_, bytes, content_type) = ASSETS.iter().find(|(name, _, _)| *name == path)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
    )
}

async fn asset(Path(path): Path<String>) -> Response {
    asset_response(&path).unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// A page: the shell, for a caller with a session; anyone else is sent to
/// log in, and back here after.
async fn page(State(app): State<Arc<App>>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    match api::caller(&app, &headers).await {
        Ok(_) => index_html(),
        Err(ApiError::Forbidden(_)) => StatusCode::FORBIDDEN.into_response(),
        Err(_) => {
            let next = uri
                .path_and_query()
                .map_or("/", |path| path.as_str())
                .to_owned();
            Redirect::to(&format!("/login?next={}", encode(&next))).into_response()
        }
    }
}

async fn not_found() -> Response {
    ApiError::NotFound("no such page".to_owned()).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
    next: Option<String>,
}

/// `GET /login?token=…&next=…` logs in and goes on; `GET /login` is the
/// page to paste a token in.
async fn login_page(State(app): State<Arc<App>>, Query(query): Query<LoginQuery>) -> Response {
    match query.token {
        Some(token) => login(&app, &token, query.next.as_deref()).await,
        // A file needs no login: go on.
        None if app.source.is_file() => {
            Redirect::to(&safe_next(query.next.as_deref())).into_response()
        }
        None => index_html(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login_form(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // A login posted from another site (login CSRF) is refused.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    {
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split("://").nth(1).unwrap_or_default();
        if origin != "null" && origin_host != host {
            return ApiError::Forbidden("a login from another site".to_owned()).into_response();
        }
    }
    login(&app, form.token.trim(), form.next.as_deref()).await
}

async fn login(app: &App, token: &str, next: Option<&str>) -> Response {
    let coordinator = match &app.source {
        Source::Live(coordinator) => coordinator,
        // A file needs no login: go on.
        Source::File(_) => return Redirect::to(&safe_next(next)).into_response(),
    };
    if token.len() > 4096 {
        return login_refused(StatusCode::UNAUTHORIZED, "that is not a token");
    }
    match app.sessions.open(coordinator, token).await {
        Ok(id) => {
            let mut response = Redirect::to(&safe_next(next)).into_response();
            if let Ok(cookie) = HeaderValue::from_str(&app.sessions.set_cookie(&id)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(ApiError::Unavailable(message)) => {
            (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
        }
        // A valid token of a role the dashboard does not take (a worker's)
        // is refused as such, not as a bad token.
        Err(error @ ApiError::Forbidden(_)) => {
            login_refused(StatusCode::FORBIDDEN, &error.to_string())
        }
        Err(error) => login_refused(StatusCode::UNAUTHORIZED, &error.to_string()),
    }
}

/// The login page again, as `401` (or `403` for a token of the wrong
/// role): the page says the token was refused.
fn login_refused(status: StatusCode, reason: &str) -> Response {
    tracing::info!(reason, %status, "dashboard login refused");
    let mut response = index_html();
    *response.status_mut() = status;
    response
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.sessions.close(&headers);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&app.sessions.clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Percent-encodes a path for a query value.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_and_their_scripts_are_embedded() {
        for path in ["index.html", "app.js", "app.css", "vendor/dagre.min.js"] {
            assert!(asset_response(path).is_some(), "{path}");
        }
        assert!(asset_response("../Cargo.toml").is_none());
    }

    #[test]
    fn only_loopback_hosts_are_loopback() {
        for host in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "",
            "10.0.0.1",
            "localhost.evil.example",
            "[::2]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn next_is_encoded_for_the_login_link() {
        assert_eq!(
            encode("/batches/a?tab=x&op=y"),
            "/batches/a%3Ftab%3Dx%26op%3Dy"
        );
    }
}
