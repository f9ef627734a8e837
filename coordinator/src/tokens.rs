//! `volley token create | ls | revoke`: the admin's side of API tokens.
//! Every change is logged with the acting token's id (never a token).

use tracing::info;
use volley_store::TokenRecord;

use crate::auth::{AuthError, MintedToken, Principal, TokenSpec};
use crate::error::CoordinatorError;
use crate::service::{Coordinator, now_ms};

impl Coordinator {
    /// Mints and stores a token; the caller sees it once.
    pub async fn create_token(
        &self,
        spec: TokenSpec,
        principal: &Principal,
    ) -> Result<MintedToken, CoordinatorError> {
        require_admin(principal)?;
        let minted = self.authenticator().create_token(spec, now_ms()).await?;
        self.store().create_token(&minted.record).await?;
        info!(audit = "token.create", token = %principal.token_id, tenant = %principal.tenant, created = %minted.record.id, role = %minted.record.role, for_tenant = %minted.record.tenant, "token created");
        Ok(minted)
    }

    /// Every token's record (hashes, not tokens).
    pub async fn list_tokens(
        &self,
        principal: &Principal,
    ) -> Result<Vec<TokenRecord>, CoordinatorError> {
        require_admin(principal)?;
        Ok(self.store().tokens().await?)
    }

    /// Revokes a token; every coordinator refuses it within a second.
    /// `false` for an unknown id.
    pub async fn revoke_token(
        &self,
        id: &str,
        principal: &Principal,
    ) -> Result<bool, CoordinatorError> {
        require_admin(principal)?;
        let revoked = self.store().revoke_token(id, now_ms()).await?;
        info!(audit = "token.revoke", token = %principal.token_id, tenant = %principal.tenant, revoked_token = id, found = revoked, "token revoked");
        Ok(revoked)
    }
}

fn require_admin(principal: &Principal) -> Result<(), CoordinatorError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(AuthError::PermissionDenied(format!(
            "a {} token cannot manage tokens",
            principal.role.as_str()
        ))
        .into())
    }
}
