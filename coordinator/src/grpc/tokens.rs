//! `volley.v1.TokenService` over [`Coordinator`].

use std::time::Duration;

use tonic::{Request, Response, Status};
use volley_proto::v1;
use volley_proto::v1::token_service_server::TokenService;
use volley_store::TokenRecord;

use super::auth::principal;
use crate::auth::TokenSpec;
use crate::service::Coordinator;

pub(crate) struct TokenAdapter {
    coordinator: Coordinator,
}

impl TokenAdapter {
    pub(crate) fn new(coordinator: Coordinator) -> Self {
        TokenAdapter { coordinator }
    }
}

fn info(record: TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: record.id,
        role: record.role,
        tenant: record.tenant,
        name: record.name,
        created_at_ms: record.created_ms,
        expires_at_ms: record.expires_ms,
        revoked_at_ms: record.revoked_ms.unwrap_or(0),
        last_used_at_ms: record.last_used_ms.unwrap_or(0),
        labels: record.labels.into_iter().collect(),
        kinds: record.kinds,
    }
}

#[tonic::async_trait]
impl TokenService for TokenAdapter {
    #[tracing::instrument(name = "token.CreateToken", skip_all)]
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let spec = TokenSpec {
            role: request.role,
            tenant: request.tenant,
            ttl: (request.ttl_ms > 0).then(|| Duration::from_millis(request.ttl_ms)),
            name: request.name,
            labels: request.labels.into_iter().collect(),
            kinds: request.kinds,
        };
        let minted = self.coordinator.create_token(spec, &principal).await?;
        Ok(Response::new(v1::CreateTokenResponse {
            token: minted.token,
            info: Some(info(minted.record)),
        }))
    }

    #[tracing::instrument(name = "token.ListTokens", skip_all)]
    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        let principal = principal(&request)?;
        let tokens = self.coordinator.list_tokens(&principal).await?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: tokens.into_iter().map(info).collect(),
        }))
    }

    #[tracing::instrument(name = "token.RevokeToken", skip_all)]
    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let principal = principal(&request)?;
        let id = request.into_inner().id;
        let revoked = self.coordinator.revoke_token(&id, &principal).await?;
        Ok(Response::new(v1::RevokeTokenResponse { revoked }))
    }

    #[tracing::instrument(name = "token.WhoAmI", skip_all)]
    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let principal = principal(&request)?;
        Ok(Response::new(v1::WhoAmIResponse {
            token_id: principal.token_id.clone(),
            role: principal.role.as_str().to_owned(),
            tenant: principal.tenant.clone(),
        }))
    }
}
