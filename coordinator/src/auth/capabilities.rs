//! Op capability tokens and lease tickets: HMACs keyed by a hash of the
//! admin token, which every coordinator of a cluster shares, so any of them
//! checks them without a lookup.

use std::collections::BTreeMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use volley_proto::BatchId;
use volley_store::OpState;

use super::principal::{AgentScope, Principal, Role, tenant_or_default};
use super::{AuthError, Authenticator, CAPABILITY_PREFIX, Mode, constant_time_eq_slices};

impl Authenticator {
    pub(super) async fn check_capability(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use volley_store::MemoryStore;

    use super::super::AuthConfig;
    use super::super::test_support::authenticator;
    use super::*;

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
}
