//! Authentication of every call, as a tower layer around the whole server:
//! no RPC can be added that skips it. The caller's `authorization: Bearer`
//! token becomes a [`Principal`] in the request's extensions, which the
//! adapters hand to the domain; the role table below refuses calls a role
//! may never make before they reach a service. Only grpc.health.v1 needs no
//! token (Kubernetes probes carry none).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Service, http};
use tonic::{Request, Status};
use tracing::warn;

use crate::auth::{AuthError, Principal, Role};
use crate::service::Coordinator;

const HEALTH_PREFIX: &str = "/grpc.health.v1.";

#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    coordinator: Coordinator,
}

pub(crate) fn layer<S>(coordinator: Coordinator) -> impl Fn(S) -> Authenticate<S> + Clone {
    move |inner| Authenticate {
        inner,
        coordinator: coordinator.clone(),
    }
}

impl<S, RequestBody> Service<http::Request<RequestBody>> for Authenticate<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if path.starts_with(HEALTH_PREFIX) {
            return Box::pin(inner.call(request));
        }
        let coordinator = self.coordinator.clone();
        Box::pin(async move {
            let bearer = bearer(request.headers());
            let checked = match coordinator.authenticate(bearer.as_deref()).await {
                Ok(principal) => allowed(&path, &principal).map(|()| principal),
                Err(error) => Err(error),
            };
            match checked {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(error) => {
                    let (code, status) = match &error {
                        AuthError::Unauthenticated(_) => (
                            "unauthenticated",
                            Status::unauthenticated(error.to_string()),
                        ),
                        AuthError::PermissionDenied(_) => (
                            "permission_denied",
                            Status::permission_denied(error.to_string()),
                        ),
                    };
                    crate::metrics::count_auth_failure(code);
                    warn!(%path, %error, "call refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The token of an `authorization: Bearer <token>` header, if any.
fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Which roles may call which paths. Finer rules (a tenant's own batches,
/// an op's own batch) are the domain's.
fn allowed(path: &str, principal: &Principal) -> Result<(), AuthError> {
    use Role::{Admin, Agent, Client, Worker};
    let roles: &[Role] = match path {
        "/volley.v1.WorkerService/Session" => &[Worker, Admin],
        "/volley.v1.WorkerService/ListWorkers" => &[Client, Worker, Admin],
        "/volley.v1.BatchService/SubmitBatch"
        | "/volley.v1.BatchService/ListBatches"
        | "/volley.v1.BatchService/CancelBatch" => &[Client, Admin],
        "/volley.v1.TokenService/WhoAmI" => &[Client, Worker, Admin, Agent],
        // Reads a batch, as BatchService's reads do.
        "/volley.v1.PlanService/GetBatchPlan" => &[Client, Admin, Agent],
        _ if path.starts_with("/volley.v1.BatchService/") => &[Client, Admin, Agent],
        _ if path.starts_with("/volley.v1.MemoryService/") => &[Client, Admin, Agent],
        _ if path.starts_with("/volley.v1.TokenService/") => &[Admin],
        // Reflection, and paths no service has (answered UNIMPLEMENTED).
        _ => &[Client, Worker, Admin, Agent],
    };
    if roles.contains(&principal.role) {
        Ok(())
    } else {
        let call = path.trim_start_matches('/');
        Err(AuthError::PermissionDenied(format!(
            "a {} token may not call {call}",
            principal.role.as_str()
        )))
    }
}

/// The caller the layer authenticated. Every adapter call has one; its
/// absence means a service was served without the layer — a bug, refused.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not authenticated (no auth layer)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_role(role: Role) -> Principal {
        Principal {
            role,
            ..Principal::anonymous()
        }
    }

    #[test]
    fn the_role_table() {
        let worker = with_role(Role::Worker);
        let client = with_role(Role::Client);
        let agent = with_role(Role::Agent);
        let admin = with_role(Role::Admin);
        assert!(allowed("/volley.v1.WorkerService/Session", &worker).is_ok());
        assert!(allowed("/volley.v1.WorkerService/Session", &client).is_err());
        assert!(allowed("/volley.v1.WorkerService/Session", &agent).is_err());
        assert!(allowed("/volley.v1.BatchService/SubmitBatch", &worker).is_err());
        assert!(allowed("/volley.v1.BatchService/SubmitBatch", &agent).is_err());
        assert!(allowed("/volley.v1.BatchService/SpawnOps", &agent).is_ok());
        assert!(allowed("/volley.v1.MemoryService/PutMemory", &worker).is_err());
        assert!(allowed("/volley.v1.MemoryService/PutMemory", &agent).is_ok());
        assert!(allowed("/volley.v1.TokenService/CreateToken", &client).is_err());
        assert!(allowed("/volley.v1.TokenService/CreateToken", &admin).is_ok());
        assert!(allowed("/volley.v1.TokenService/WhoAmI", &worker).is_ok());
        assert!(allowed("/volley.v1.PlanService/GetBatchPlan", &worker).is_err());
        assert!(allowed("/volley.v1.PlanService/GetBatchPlan", &agent).is_ok());
        assert!(allowed("/volley.v1.PlanService/GetBatchPlan", &client).is_ok());
        let refused = allowed("/volley.v1.MemoryService/PutMemory", &worker).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "permission denied: a worker token may not call volley.v1.MemoryService/PutMemory"
        );
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc"));
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer(&headers), None);
    }
}
