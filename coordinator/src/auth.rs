//! Who is calling: API tokens, the bootstrap admin token, and the
//! capability tokens of running ops — and what each may do.
//!
//! Why it looks like this:
//! - A token is `vly_<id>_<secret>` with 256 random bits of secret. The
//!   store keeps only its SHA-256 (with id, role, tenant, expiry), so a
//!   copy of Redis gives no usable token. The id is public: `token ls`,
//!   `token revoke` and every audit line name it, never the token.
//! - Checks are cached in memory, keyed by the token's hash: an RPC costs a
//!   hash and a map lookup, not a Redis call. The cache is dropped whenever
//!   the store's revocation counter moves, which every coordinator polls
//!   every [`REVOCATION_POLL`], so a revocation holds everywhere within a
//!   second.
//! - The admin token comes from a file (a mounted Secret) and is never
//!   stored: it works even when Redis restarted empty.
//! - An op's capability token is an HMAC over (tenant, batch, op index,
//!   attempt) keyed by a hash of the admin token, which every coordinator
//!   of a cluster shares, so any of them can check it without a lookup.
//!   It is refused as soon as that attempt no longer runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use volley_proto::BatchId;
use volley_store::{OpState, Store, TokenRecord};

/// The tenant of admin calls and of tokens created without `--tenant`. Its
/// memory namespaces are stored under their plain names.
pub const DEFAULT_TENANT: &str = "default";
/// How often the revocation counter is read.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// A token's last use is written at most this often per coordinator.
const TOUCH_EVERY_MS: u64 = 60_000;
/// The shortest admin token accepted from `--admin-token-file`.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

const TOKEN_PREFIX: &str = "vly_";
const CAPABILITY_PREFIX: &str = "vlycap.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Batches and memory of its tenant.
    Client,
    /// WorkerService only.
    Worker,
    /// Everything, across tenants, and token management.
    Admin,
    /// A running op's capability: memory of its batch, spawns into it.
    Agent,
}

impl Role {
    /// The roles a token can be created with.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

/// The op attempt a capability token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentScope {
    pub batch: BatchId,
    pub op_index: u32,
    pub attempt: u32,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's public id (`admin` for the bootstrap token, `anonymous`
    /// without authentication, `op:<batch>/<index>@<attempt>` for an op).
    pub token_id: String,
    pub role: Role,
    pub tenant: String,
    pub agent: Option<AgentScope>,
    /// A worker token's limits (empty: none).
    pub labels: BTreeMap<String, String>,
    pub kinds: Vec<String>,
}

impl Principal {
    /// Every caller when the coordinator runs with `--auth none`.
    pub fn anonymous() -> Principal {
        Principal {
            token_id: "anonymous".to_owned(),
            role: Role::Admin,
            tenant: DEFAULT_TENANT.to_owned(),
            agent: None,
            labels: BTreeMap::new(),
            kinds: Vec::new(),
        }
    }

    fn admin() -> Principal {
        Principal {
            token_id: "admin".to_owned(),
            ..Principal::anonymous()
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may see a batch of `tenant` (an empty tenant is
    /// a batch stored before tenants: the default tenant's).
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.is_admin() || self.tenant == tenant_or_default(tenant)
    }

    /// Refuses a worker registration outside the token's limits.
    pub fn check_worker_limits(
        &self,
        labels: &BTreeMap<String, String>,
        kinds: &[String],
    ) -> Result<(), AuthError> {
        // `secret.NAME` labels say which secrets a worker holds (names, no
        // values): an advertisement, not a claim the token must allow.
        if !self.labels.is_empty()
            && let Some((key, value)) = labels.iter().find(|(key, value)| {
                !key.starts_with(volley_plan::SECRET_LABEL_PREFIX)
                    && self.labels.get(*key) != Some(*value)
            })
        {
            return Err(AuthError::PermissionDenied(format!(
                "token {} may not register label {key}={value}",
                self.token_id
            )));
        }
        if !self.kinds.is_empty()
            && let Some(kind) = kinds.iter().find(|kind| !self.kinds.contains(kind))
        {
            return Err(AuthError::PermissionDenied(format!(
                "token {} may not register kind `{kind}`",
                self.token_id
            )));
        }
        Ok(())
    }
}

/// `tenant`, or the default tenant for an empty one.
pub fn tenant_or_default(tenant: &str) -> &str {
    if tenant.is_empty() {
        DEFAULT_TENANT
    } else {
        tenant
    }
}

/// Checks a tenant name: 1 to 63 of `[A-Za-z0-9_-]`.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() || tenant.len() > 63 {
        return Err(format!("tenant `{tenant}` must be 1 to 63 characters long"));
    }
    if let Some(bad) = tenant.chars().find(|character| {
        !(character.is_ascii_alphanumeric() || *character == '-' || *character == '_')
    }) {
        return Err(format!(
            "tenant `{tenant}`: `{bad}` is not allowed (letters, digits, `-` and `_`)"
        ));
    }
    Ok(())
}

/// The store's name of a tenant's namespace: the default tenant's as it is
/// spelled, another's prefixed with `<tenant>@` (`@` is not allowed in a
/// namespace, so no two tenants' names can meet).
pub fn tenant_namespace(tenant: &str, namespace: &str) -> String {
    let tenant = tenant_or_default(tenant);
    if tenant == DEFAULT_TENANT {
        namespace.to_owned()
    } else {
        format!("{tenant}@{namespace}")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one that is unknown, expired or revoked.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid token whose role may not make this call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

/// How the coordinator authenticates callers.
#[derive(Clone, Default)]
pub enum AuthConfig {
    /// Nobody is checked (`--auth none`): every caller is an admin of the
    /// default tenant. The CLI allows it only on a loopback address.
    #[default]
    None,
    /// Every call needs a token; `admin_token` (from
    /// `--admin-token-file`) is the bootstrap admin's.
    Tokens { admin_token: String },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::None => formatter.write_str("None"),
            AuthConfig::Tokens { .. } => formatter.write_str("Tokens { admin_token: *** }"),
        }
    }
}

/// A new token: what the caller gets once, and what the store keeps.
pub struct MintedToken {
    pub token: String,
    pub record: TokenRecord,
}

/// The request of `volley token create`, checked.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub role: String,
    pub tenant: String,
    pub ttl: Option<Duration>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub kinds: Vec<String>,
}

struct Cached {
    principal: Arc<Principal>,
    expires_ms: u64,
    /// When this coordinator last recorded the token's use.
    touched_ms: u64,
}

#[derive(Default)]
struct Cache {
    /// The revocation counter the entries were checked under.
    revocations: u64,
    entries: HashMap<[u8; 32], Cached>,
}

enum Mode {
    None,
    Tokens {
        admin_hash: [u8; 32],
        /// HMAC-SHA256 already keyed with the cluster's capability key:
        /// each use clones it, so the key is not hashed again for every
        /// assignment (two MACs an op: its capability and lease ticket).
        capability_mac: Hmac<Sha256>,
    },
}

/// Checks callers' tokens and mints new ones. Shared by every RPC.
pub struct Authenticator {
    mode: Mode,
    store: Arc<dyn Store>,
    cache: Mutex<Cache>,
    anonymous: Arc<Principal>,
    admin: Arc<Principal>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, store: Arc<dyn Store>) -> Authenticator {
        let mode = match config {
            AuthConfig::None => Mode::None,
            AuthConfig::Tokens { admin_token } => Mode::Tokens {
                admin_hash: sha256(admin_token.as_bytes()),
                capability_mac: <Hmac<Sha256> as Mac>::new_from_slice(&sha256(
                    format!("volley capability key v1\0{admin_token}").as_bytes(),
                ))
                .expect("HMAC takes a key of any length"),
            },
        };
        Authenticator {
            mode,
            store,
            cache: Mutex::new(Cache::default()),
            anonymous: Arc::new(Principal::anonymous()),
            admin: Arc::new(Principal::admin()),
        }
    }

    /// Whether calls are checked at all.
    pub fn enabled(&self) -> bool {
        matches!(self.mode, Mode::Tokens { .. })
    }

    /// Who `bearer` is (the token of an `authorization: Bearer` header).
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        now_ms: u64,
    ) -> Result<Arc<Principal>, AuthError> {
        let Mode::Tokens {
            admin_hash,
            capability_mac,
        } = &self.mode
        else {
            return Ok(self.anonymous.clone());
        };
        let token = match bearer.map(str::trim) {
            Some(token) if !token.is_empty() => token,
            _ => {
                return Err(AuthError::Unauthenticated(
                    "no token: pass --token, --token-file or VOLLEY_TOKEN (sent as `authorization: Bearer <token>`)".to_owned(),
                ));
            }
        };
        let hash = sha256(token.as_bytes());
        if constant_time_eq(&hash, admin_hash) {
            return Ok(self.admin.clone());
        }
        if let Some(capability) = token.strip_prefix(CAPABILITY_PREFIX) {
            return self.check_capability(capability, capability_mac).await;
        }
        let Some(id) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
        else {
            return Err(AuthError::Unauthenticated(
                "unknown token (not a Volley token)".to_owned(),
            ));
        };
        if let Some(principal) = self.cached(&hash, id, now_ms)? {
            return Ok(principal);
        }
        let revocations = self.cache_revocations();
        let record = self
            .store
            .token(id)
            .await
            .map_err(|error| {
                warn!(token = id, %error, "cannot read the token from the store");
                AuthError::Unauthenticated(format!(
                    "token {id} cannot be checked now (the store is unreachable)"
                ))
            })?
            .filter(|record| {
                hex::decode(&record.hash)
                    .ok()
                    .and_then(|stored| <[u8; 32]>::try_from(stored).ok())
                    .is_some_and(|stored| constant_time_eq(&stored, &hash))
            })
            .ok_or_else(|| AuthError::Unauthenticated("unknown token".to_owned()))?;
        if let Some(revoked_ms) = record.revoked_ms {
            return Err(AuthError::Unauthenticated(format!(
                "token {id} was revoked at {}",
                format_ms(revoked_ms)
            )));
        }
        if record.expires_ms != 0 && record.expires_ms <= now_ms {
            return Err(AuthError::Unauthenticated(format!(
                "token {id} expired at {}",
                format_ms(record.expires_ms)
            )));
        }
        let role = Role::parse(&record.role).ok_or_else(|| {
            AuthError::Unauthenticated(format!("token {id} has an unknown role `{}`", record.role))
        })?;
        let principal = Arc::new(Principal {
            token_id: record.id.clone(),
            role,
            tenant: tenant_or_default(&record.tenant).to_owned(),
            agent: None,
            labels: record.labels.clone(),
            kinds: record.kinds.clone(),
        });
        if let Ok(mut cache) = self.cache.lock()
            && cache.revocations == revocations
        {
            cache.entries.insert(
                hash,
                Cached {
                    principal: principal.clone(),
                    expires_ms: record.expires_ms,
                    touched_ms: 0,
                },
            );
        }
        self.touch(id, now_ms);
        Ok(principal)
    }

    fn cache_revocations(&self) -> u64 {
        self.cache
            .lock()
            .map(|cache| cache.revocations)
            .unwrap_or(0)
    }

    /// A cached check of the token, if any; an expired one is refused.
    fn cached(
        &self,
        hash: &[u8; 32],
        id: &str,
        now_ms: u64,
    ) -> Result<Option<Arc<Principal>>, AuthError> {
        let Ok(mut cache) = self.cache.lock() else {
            return Ok(None);
        };
        let Some(cached) = cache.entries.get_mut(hash) else {
            return Ok(None);
        };
        if cached.expires_ms != 0 && cached.expires_ms <= now_ms {
            let expires_ms = cached.expires_ms;
            cache.entries.remove(hash);
            return Err(AuthError::Unauthenticated(format!(
                "token {id} expired at {}",
                format_ms(expires_ms)
            )));
        }
        let principal = cached.principal.clone();
        let touch = now_ms.saturating_sub(cached.touched_ms) >= TOUCH_EVERY_MS;
        if touch {
            cached.touched_ms = now_ms;
        }
        drop(cache);
        if touch {
            self.touch(id, now_ms);
        }
        Ok(Some(principal))
    }

    /// Records the token's use, off the caller's path.
    fn touch(&self, id: &str, now_ms: u64) {
        let store = self.store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store.touch_token(&id, now_ms).await {
                warn!(token = %id, %error, "could not record the token's use");
            }
        });
    }

    async fn check_capability(
        &self,
        capability: &str,
        key: &Hmac<Sha256>,
    ) -> Result<Arc<Principal>, AuthError> {
        let refused = || AuthError::Unauthenticated("invalid op token".to_owned());
        let (claims, mac) = capability.rsplit_once('.').ok_or_else(refused)?;
        let expected = capability_mac(key, claims);
        if !constant_time_eq_slices(mac.as_bytes(), expected.as_bytes()) {
            return Err(refused());
        }
        let mut parts = claims.split('.');
        let (Some(tenant), Some(batch), Some(index), Some(attempt), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(refused());
        };
        let op_index: u32 = index.parse().map_err(|_| refused())?;
        let attempt: u32 = attempt.parse().map_err(|_| refused())?;
        let batch = BatchId::new(batch);
        // The token lives as long as its attempt runs.
        let running = self
            .store
            .op_records_at(&batch, &[op_index])
            .await
            .ok()
            .and_then(|records| records.into_iter().next())
            .is_some_and(|record| record.state == OpState::Running && record.attempts == attempt);
        if !running {
            return Err(AuthError::Unauthenticated(format!(
                "the op token of batch {batch} op #{op_index} attempt {attempt} expired: that attempt is not running"
            )));
        }
        Ok(Arc::new(Principal {
            token_id: format!("op:{batch}/{op_index}@{attempt}"),
            role: Role::Agent,
            tenant: tenant.to_owned(),
            agent: Some(AgentScope {
                batch,
                op_index,
                attempt,
            }),
            labels: BTreeMap::new(),
            kinds: Vec::new(),
        }))
    }

    /// The capability token of one attempt of an op ("" without
    /// authentication).
    pub fn capability(&self, tenant: &str, batch: &BatchId, op_index: u32, attempt: u32) -> String {
        let Mode::Tokens {
            capability_mac: key,
            ..
        } = &self.mode
        else {
            return String::new();
        };
        let claims = format!(
            "{}.{}.{op_index}.{attempt}",
            tenant_or_default(tenant),
            batch.as_str()
        );
        let mac = capability_mac(key, &claims);
        let mut token =
            String::with_capacity(CAPABILITY_PREFIX.len() + claims.len() + 1 + mac.len());
        token.push_str(CAPABILITY_PREFIX);
        token.push_str(&claims);
        token.push('.');
        token.push_str(&mac);
        token
    }

    /// The lease ticket of an attempt given to `holder` (`<token id>/<worker
    /// id>`): what lets that identity, and no other, carry the attempt on
    /// after a reconnect to any coordinator ("" without authentication).
    pub fn lease_ticket(
        &self,
        batch: &BatchId,
        op_index: u32,
        attempt: u32,
        holder: &str,
    ) -> String {
        let Mode::Tokens {
            capability_mac: key,
            ..
        } = &self.mode
        else {
            return String::new();
        };
        let claims = format!("lease|{}|{op_index}|{attempt}|{holder}", batch.as_str());
        capability_mac(key, &claims)
    }

    /// Whether `ticket` is the lease ticket of that attempt for `holder`.
    /// Without authentication every ticket passes (nobody is checked).
    pub fn check_lease_ticket(
        &self,
        batch: &BatchId,
        op_index: u32,
        attempt: u32,
        holder: &str,
        ticket: &str,
    ) -> bool {
        if !self.enabled() {
            return true;
        }
        let expected = self.lease_ticket(batch, op_index, attempt, holder);
        constant_time_eq_slices(expected.as_bytes(), ticket.as_bytes())
    }

    /// Drops every cached check when the store's revocation counter moved;
    /// runs until `shutdown`.
    pub async fn watch_revocations(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.enabled() {
            return;
        }
        let mut failing = false;
        loop {
            match self.store.token_revocations().await {
                Ok(revocations) => {
                    failing = false;
                    if let Ok(mut cache) = self.cache.lock()
                        && cache.revocations != revocations
                    {
                        cache.revocations = revocations;
                        cache.entries.clear();
                    }
                }
                Err(error) if !failing => {
                    failing = true;
                    warn!(%error, "cannot read token revocations; cached tokens stay valid until the store answers");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REVOCATION_POLL) => {}
            }
        }
    }

    /// Mints a token for `spec` and stores its record.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        now_ms: u64,
    ) -> Result<MintedToken, TokenSpecError> {
        let role = Role::parse(&spec.role).ok_or_else(|| {
            TokenSpecError(format!(
                "role `{}`: must be client, worker or admin",
                spec.role
            ))
        })?;
        let tenant = if spec.tenant.is_empty() {
            DEFAULT_TENANT.to_owned()
        } else {
            check_tenant(&spec.tenant).map_err(TokenSpecError)?;
            spec.tenant
        };
        if role != Role::Worker && (!spec.labels.is_empty() || !spec.kinds.is_empty()) {
            return Err(TokenSpecError(
                "labels and kinds limit worker tokens only".to_owned(),
            ));
        }
        let id = hex::encode(random_bytes::<6>());
        let token = format!("{TOKEN_PREFIX}{id}_{}", random_secret());
        let record = TokenRecord {
            id,
            hash: hex::encode(sha256(token.as_bytes())),
            role: role.as_str().to_owned(),
            tenant,
            name: spec.name,
            created_ms: now_ms,
            expires_ms: spec
                .ttl
                .map_or(0, |ttl| now_ms.saturating_add(ttl.as_millis() as u64)),
            labels: spec.labels,
            kinds: spec.kinds,
            revoked_ms: None,
            last_used_ms: None,
        };
        info!(token = %record.id, role = %record.role, tenant = %record.tenant, "token minted");
        Ok(MintedToken { token, record })
    }
}

/// A `token create` request that cannot be honoured.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenSpecError(pub String);

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// HMAC-SHA256 of `claims`, truncated to its first 128 bits (as HMAC-
/// SHA256-128 does; still far beyond guessing), as 32 lowercase hex digits.
fn capability_mac(key: &Hmac<Sha256>, claims: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = key.clone();
    mac.update(claims.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(32);
    for byte in &digest[..16] {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

/// 256 random bits as 64 lowercase hex characters: a token's secret, and
/// the admin tokens `volley up` and `volley run` make.
pub fn random_secret() -> String {
    hex::encode(random_bytes::<32>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

fn constant_time_eq(left: &[u8; 32], right: &[u8; 32]) -> bool {
    constant_time_eq_slices(left, right)
}

fn constant_time_eq_slices(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0_u8, |difference, (left, right)| {
                difference | (left ^ right)
            })
            == 0
}

fn format_ms(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use volley_store::MemoryStore;

    use super::*;

    const ADMIN: &str = "an-admin-token-of-at-least-32-characters";

    fn authenticator() -> Authenticator {
        Authenticator::new(
            &AuthConfig::Tokens {
                admin_token: ADMIN.to_owned(),
            },
            Arc::new(MemoryStore::new()),
        )
    }

    #[tokio::test]
    async fn missing_wrong_and_admin_tokens() {
        let auth = authenticator();
        assert!(matches!(
            auth.authenticate(None, 1).await,
            Err(AuthError::Unauthenticated(message)) if message.contains("--token")
        ));
        assert!(matches!(
            auth.authenticate(Some("nonsense"), 1).await,
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("vly_abc_def"), 1).await,
            Err(AuthError::Unauthenticated(message)) if message == "unknown token"
        ));
        let admin = auth.authenticate(Some(ADMIN), 1).await.unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert_eq!(admin.token_id, "admin");
    }

    #[tokio::test]
    async fn minted_tokens_check_out_until_they_expire() {
        let auth = authenticator();
        let minted = auth
            .create_token(
                TokenSpec {
                    role: "client".into(),
                    tenant: "team-a".into(),
                    ttl: Some(Duration::from_secs(10)),
                    ..TokenSpec::default()
                },
                1_000,
            )
            .await
            .unwrap();
        assert!(minted.token.starts_with("vly_"));
        assert!(minted.token.len() >= 4 + 12 + 1 + 64);
        assert!(!minted.record.hash.contains(&minted.token));
        auth.store.create_token(&minted.record).await.unwrap();
        let principal = auth.authenticate(Some(&minted.token), 2_000).await.unwrap();
        assert_eq!(principal.role, Role::Client);
        assert_eq!(principal.tenant, "team-a");
        // From the cache now, and still refused once expired.
        assert!(auth.authenticate(Some(&minted.token), 3_000).await.is_ok());
        assert!(matches!(
            auth.authenticate(Some(&minted.token), 11_000).await,
            Err(AuthError::Unauthenticated(message)) if message.contains("expired")
        ));
        // The right id with the wrong secret is unknown.
        let forged = format!("vly_{}_{}", minted.record.id, "0".repeat(64));
        assert!(auth.authenticate(Some(&forged), 2_000).await.is_err());
    }

    #[tokio::test]
    async fn a_revocation_empties_the_cache() {
        let auth = Arc::new(authenticator());
        let minted = auth
            .create_token(
                TokenSpec {
                    role: "worker".into(),
                    ..TokenSpec::default()
                },
                1,
            )
            .await
            .unwrap();
        auth.store.create_token(&minted.record).await.unwrap();
        assert!(auth.authenticate(Some(&minted.token), 2).await.is_ok());
        auth.store.revoke_token(&minted.record.id, 3).await.unwrap();
        let shutdown = CancellationToken::new();
        let watcher = tokio::spawn(auth.clone().watch_revocations(shutdown.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match auth.authenticate(Some(&minted.token), 4).await {
                Err(AuthError::Unauthenticated(message)) => {
                    assert!(message.contains("revoked"), "{message}");
                    break;
                }
                _ => assert!(tokio::time::Instant::now() < deadline, "never refused"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn capabilities_cannot_be_forged_or_moved() {
        let auth = authenticator();
        let batch = BatchId::new("0193-batch");
        let token = auth.capability("team-a", &batch, 3, 1);
        // Another op, attempt or tenant with the same MAC is refused before
        // any store lookup.
        for forged in [
            token.replace(".3.1.", ".4.1."),
            token.replace(".3.1.", ".3.2."),
            token.replace("team-a", "team-b"),
        ] {
            assert_eq!(
                auth.authenticate(Some(&forged), 1).await.unwrap_err(),
                AuthError::Unauthenticated("invalid op token".into())
            );
        }
        // Genuine, but the batch does not run that attempt.
        assert!(matches!(
            auth.authenticate(Some(&token), 1).await,
            Err(AuthError::Unauthenticated(message)) if message.contains("not running")
        ));
        // Another cluster's key makes another MAC.
        let other = Authenticator::new(
            &AuthConfig::Tokens {
                admin_token: "a-different-admin-token-of-32-characters".into(),
            },
            Arc::new(MemoryStore::new()),
        );
        assert_ne!(other.capability("team-a", &batch, 3, 1), token);
    }

    #[test]
    fn lease_tickets_bind_the_attempt_to_its_holder() {
        let auth = authenticator();
        let batch = BatchId::new("0193-batch");
        let ticket = auth.lease_ticket(&batch, 2, 1, "tok1/w1");
        assert!(auth.check_lease_ticket(&batch, 2, 1, "tok1/w1", &ticket));
        assert!(!auth.check_lease_ticket(&batch, 2, 1, "tok2/w1", &ticket));
        assert!(!auth.check_lease_ticket(&batch, 2, 2, "tok1/w1", &ticket));
        assert!(!auth.check_lease_ticket(&batch, 3, 1, "tok1/w1", &ticket));
        assert!(!auth.check_lease_ticket(&batch, 2, 1, "tok1/w1", ""));
        let open = Authenticator::new(&AuthConfig::None, Arc::new(MemoryStore::new()));
        assert_eq!(open.lease_ticket(&batch, 2, 1, "anonymous/w1"), "");
        assert!(open.check_lease_ticket(&batch, 2, 1, "anonymous/w1", ""));
    }

    #[test]
    fn worker_limits() {
        let mut principal = Principal::anonymous();
        principal.labels = BTreeMap::from([("zone".into(), "eu".into())]);
        principal.kinds = vec!["echo".into()];
        assert!(
            principal
                .check_worker_limits(
                    &BTreeMap::from([("zone".into(), "eu".into())]),
                    &["echo".into()]
                )
                .is_ok()
        );
        assert!(
            principal
                .check_worker_limits(&BTreeMap::from([("zone".into(), "us".into())]), &[])
                .is_err()
        );
        assert!(
            principal
                .check_worker_limits(&BTreeMap::new(), &["shell".into()])
                .is_err()
        );
    }

    #[test]
    fn tenants_and_their_namespaces() {
        assert!(check_tenant("team-a_1").is_ok());
        assert!(check_tenant("").is_err());
        assert!(check_tenant("a@b").is_err());
        assert!(check_tenant("a.b").is_err());
        assert_eq!(tenant_namespace("default", "shared"), "shared");
        assert_eq!(tenant_namespace("", "shared"), "shared");
        assert_eq!(tenant_namespace("a", "shared"), "a@shared");
        assert_ne!(
            tenant_namespace("a", "shared"),
            tenant_namespace("b", "shared")
        );
    }
}
