//! API tokens: checking a bearer token (cached in memory, the cache
//! dropped whenever the store's revocation counter moves) and minting new
//! ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use volley_store::TokenRecord;

use super::principal::{Principal, Role, check_tenant, tenant_or_default};
use super::{
    AuthError, Authenticator, CAPABILITY_PREFIX, DEFAULT_TENANT, Mode, REVOCATION_POLL,
    TOKEN_PREFIX, constant_time_eq, sha256,
};

/// A token's last use is written at most this often per coordinator.
const TOUCH_EVERY_MS: u64 = 60_000;

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
pub(super) struct Cache {
    /// The revocation counter the entries were checked under.
    revocations: u64,
    entries: HashMap<[u8; 32], Cached>,
}

impl Authenticator {
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

pub(super) fn format_ms(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::super::test_support::{ADMIN, authenticator};
    use super::*;

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
}
