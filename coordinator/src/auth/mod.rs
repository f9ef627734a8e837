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
//!
//! # Layout
//! - `principal` — who a caller is (`Principal`, `Role`) and tenants.
//! - `tokens` — API tokens: checking a bearer (cached, dropped on
//!   revocation) and minting new ones.
//! - `capabilities` — op capability tokens and lease tickets (HMACs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use volley_store::Store;

mod capabilities;
mod principal;
mod tokens;

pub use principal::{
    AgentScope, Principal, Role, check_tenant, tenant_namespace, tenant_or_default,
};
use tokens::Cache;
pub use tokens::{MintedToken, TokenSpec, TokenSpecError, random_secret};

/// The tenant of admin calls and of tokens created without `--tenant`. Its
/// memory namespaces are stored under their plain names.
pub const DEFAULT_TENANT: &str = "default";
/// How often the revocation counter is read.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// The shortest admin token accepted from `--admin-token-file`.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

const TOKEN_PREFIX: &str = "vly_";
const CAPABILITY_PREFIX: &str = "vlycap.";

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
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use volley_store::MemoryStore;

    use super::{AuthConfig, Authenticator};

    pub(crate) const ADMIN: &str = "an-admin-token-of-at-least-32-characters";

    pub(crate) fn authenticator() -> Authenticator {
        Authenticator::new(
            &AuthConfig::Tokens {
                admin_token: ADMIN.to_owned(),
            },
            Arc::new(MemoryStore::new()),
        )
    }
}
