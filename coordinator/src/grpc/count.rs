//! Counts every gRPC call by method and status code (`volley_coordinator_grpc_requests_total`).
//!
//! A tower layer around the whole server. The code is the one the call's
//! response opened with: a unary call's final status, or for a stream its
//! start (a stream that fails later, in its trailers, counts as `OK`).
//! Counting one call is one labelled increment, per call, never per message:
//! a worker's whole session is one call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::{Service, http};

use crate::metrics::GRPC_REQUESTS_TOTAL;

/// Paths of our services and the health service; anything else (a stray
/// client's made-up path) is `other`, so the label stays bounded.
const COUNTED_PREFIXES: &[&str] = &["/volley.v1.", "/grpc.health.v1."];

#[derive(Clone)]
pub(crate) struct CountRequests<S> {
    inner: S,
}

pub(crate) fn layer<S>(inner: S) -> CountRequests<S> {
    CountRequests { inner }
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for CountRequests<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => code_label(response.headers()),
                // The transport failed the call before any status.
                Err(_) => "Unavailable",
            };
            metrics::counter!(GRPC_REQUESTS_TOTAL, "method" => method, "code" => code).increment(1);
            response
        })
    }
}

fn method_label(path: &str) -> String {
    if COUNTED_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        path.trim_start_matches('/').to_owned()
    } else {
        "other".to_owned()
    }
}

/// The `grpc-status` of a trailers-only response (an error, or an empty
/// one); none in the headers means the call went on normally: `OK`.
fn code_label(headers: &http::HeaderMap) -> &'static str {
    let Some(value) = headers.get("grpc-status") else {
        return "OK";
    };
    let code = value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from);
    code_name(code)
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_our_services_are_other() {
        assert_eq!(
            method_label("/volley.v1.BatchService/SubmitBatch"),
            "volley.v1.BatchService/SubmitBatch"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/made.up.Service/Anything"), "other");
    }

    #[test]
    fn codes_come_from_a_trailers_only_response() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_label(&headers), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_label(&headers), "NotFound");
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(code_label(&headers), "Unknown");
    }
}
