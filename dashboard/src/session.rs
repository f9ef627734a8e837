//! Who is looking: dashboard sessions made from the same tokens as the
//! gRPC API, and the CSRF check on every change.
//!
//! A session is a random id in an `HttpOnly; SameSite=Strict` cookie that
//! maps, in this process, to the token it was opened with. Every request
//! authenticates that token again through the coordinator, so a revoked
//! or expired token ends its sessions at once, and a session never sees
//! more than its token would over gRPC (a tenant sees its tenant's
//! batches). Sessions live in one coordinator's memory: behind a load
//! balancer a user logs in once per coordinator, which the one-time link
//! makes a click.
//!
//! Changes (`POST`) carry the session's CSRF token in `X-Volley-Csrf`: a
//! page of another site can make the browser send the cookie, never read
//! the token. A script may skip the cookie and send `Authorization:
//! Bearer`, which no other site can make a browser send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use volley_coordinator::Coordinator;
use volley_coordinator::auth::{AuthError, Principal, Role};

use crate::api::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "volley_session";
/// The header a change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-volley-csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions one process keeps (expired ones are dropped first).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: String,
    csrf: String,
    expires_ms: u64,
}

/// The sessions of this process, and the CSRF token of callers without
/// one (`--auth none`).
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    anonymous_csrf: String,
    /// `Secure` cookies (the dashboard is behind TLS).
    pub secure: bool,
}

/// A caller: who, and the CSRF token its changes must carry (none for a
/// bearer token).
pub struct Caller {
    pub principal: Arc<Principal>,
    pub csrf: Option<String>,
    /// Whether the coordinator checks tokens at all.
    pub authenticated: bool,
}

impl Caller {
    /// Whether this caller may cancel batches (read-only roles may not).
    pub fn may_change(&self) -> bool {
        matches!(self.principal.role, Role::Client | Role::Admin)
    }
}

impl Sessions {
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            anonymous_csrf: random_hex(16),
            secure,
        }
    }

    /// Opens a session for `token`: the cookie's value. The token must be
    /// valid and of a role that reads batches.
    pub async fn open(&self, coordinator: &Coordinator, token: &str) -> Result<String, ApiError> {
        let principal = coordinator
            .authenticate(Some(token))
            .await
            .map_err(auth_error)?;
        check_role(&principal)?;
        let id = random_hex(32);
        let session = Session {
            token: token.to_owned(),
            csrf: random_hex(16),
            expires_ms: now_ms() + SESSION_TTL.as_millis() as u64,
        };
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if open.len() >= MAX_SESSIONS {
            let now = now_ms();
            open.retain(|_, session| session.expires_ms > now);
        }
        if open.len() >= MAX_SESSIONS {
            return Err(ApiError::Unavailable(
                "too many open dashboard sessions; try again later".to_owned(),
            ));
        }
        open.insert(id.clone(), session);
        Ok(id)
    }

    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.open
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .remove(id);
        }
    }

    /// The caller of a request: its bearer token, else its session, else
    /// nobody — which the coordinator accepts only with `--auth none`.
    pub async fn caller(
        &self,
        coordinator: &Coordinator,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        if let Some(bearer) = bearer(headers) {
            let principal = coordinator
                .authenticate(Some(bearer))
                .await
                .map_err(auth_error)?;
            check_role(&principal)?;
            return Ok(Caller {
                principal,
                csrf: None,
                authenticated: true,
            });
        }
        if let Some(id) = cookie(headers, COOKIE) {
            let found = {
                let open = self
                    .open
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                open.get(id)
                    .filter(|session| session.expires_ms > now_ms())
                    .map(|session| (session.token.clone(), session.csrf.clone()))
            };
            if let Some((token, csrf)) = found {
                match coordinator.authenticate(Some(&token)).await {
                    Ok(principal) => {
                        return Ok(Caller {
                            principal,
                            csrf: Some(csrf),
                            authenticated: true,
                        });
                    }
                    Err(error) => {
                        self.open
                            .lock()
                            .unwrap_or_else(|poison| poison.into_inner())
                            .remove(id);
                        return Err(auth_error(error));
                    }
                }
            }
        }
        match coordinator.authenticate(None).await {
            Ok(principal) => Ok(Caller {
                principal,
                csrf: Some(self.anonymous_csrf.clone()),
                authenticated: false,
            }),
            Err(_) => Err(ApiError::Unauthenticated(
                "log in first: paste a token at /login, or open the link `volley up` prints"
                    .to_owned(),
            )),
        }
    }

    /// The `Set-Cookie` value that opens session `id`.
    pub fn set_cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends the session.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// A change must carry the caller's CSRF token (a bearer caller has none
/// to carry).
pub fn check_csrf(caller: &Caller, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &caller.csrf else {
        return Ok(());
    };
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a change needs the header `{CSRF_HEADER}` with the session's token (GET /api/session)"
        )))
    }
}

/// Dashboards show batches: a worker's or a running op's token is not for
/// them.
fn check_role(principal: &Principal) -> Result<(), ApiError> {
    if principal.agent.is_some() || matches!(principal.role, Role::Worker | Role::Agent) {
        return Err(ApiError::Forbidden(
            "this token is a worker's or an op's: the dashboard takes client and admin tokens"
                .to_owned(),
        ));
    }
    Ok(())
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::Unauthenticated(message) => ApiError::Unauthenticated(message),
        AuthError::PermissionDenied(message) => ApiError::Forbidden(message),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    (!token.trim().is_empty()).then_some(token.trim())
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Where a login may send the browser on: a path of this site only (no
/// `//host`, no scheme, no backslash tricks), else `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && path.len() <= 2048
                && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A fresh random token (256 bits, hex).
pub(crate) fn random_token() -> String {
    random_hex(32)
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // The OS's generator; without one there is no safe session to make.
    getrandom::fill(&mut buffer).expect("the OS random generator works");
    hex::encode(buffer)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/batches/abc?tab=timeline")),
            "/batches/abc?tab=timeline"
        );
        for hostile in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/x\r\nSet-Cookie: a=b",
            "",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "other=1; volley_session=abc; x=volley_session=zzz"
                .parse()
                .expect("a header value"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn csrf_compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
