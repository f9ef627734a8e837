//! How to reach a coordinator: its URL, the token every call carries, and
//! TLS. One [`Connection`] builds every endpoint of the SDK (batches,
//! memory, workers, tokens, health), so none can forget the token or TLS;
//! [`coordinator_endpoint`] is the one endpoint builder, the worker's too.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Endpoint;
use volley_tls::{ClientTlsFiles, TlsError};

use crate::error::ClientError;

/// Where a coordinator is and how to prove who we are to it.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// `http://host:port`, `https://host:port` (always TLS), or `host:port`.
    pub url: String,
    /// Sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// The CA to trust for `https://` (default: the webpki roots) and a
    /// client certificate for mTLS.
    pub tls: ClientTlsFiles,
}

impl Connection {
    /// A connection to `url` without a token or TLS files.
    pub fn new(url: impl Into<String>) -> Connection {
        Connection {
            url: url.into(),
            ..Connection::default()
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Connection {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(token);
        self
    }

    pub fn with_tls(mut self, tls: ClientTlsFiles) -> Connection {
        self.tls = tls;
        self
    }

    /// The url as completed (`host:port` → `http://host:port`).
    pub fn full_url(&self) -> String {
        if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("http://{}", self.url)
        }
    }

    /// The endpoint: TLS for `https://`, `connect_timeout`, TCP_NODELAY.
    pub(crate) fn endpoint(&self, connect_timeout: Duration) -> Result<Endpoint, ClientError> {
        let url = self.full_url();
        coordinator_endpoint(&url, &self.tls, connect_timeout)
            .map_err(|error| ClientError::unreachable(&url, error))
    }

    /// The interceptor that adds the token to each call.
    pub(crate) fn bearer(&self) -> Result<BearerToken, ClientError> {
        BearerToken::new(self.token.as_deref())
    }
}

/// The endpoint of a coordinator at `url` (`https://` means TLS, `http://`
/// or a bare `host:port` plaintext; see [`volley_tls::client_endpoint`]),
/// giving up a connection attempt after `connect_timeout`, with
/// TCP_NODELAY (results and assignments are small, latency-bound messages).
/// The SDK's clients and the worker's session build theirs here.
pub fn coordinator_endpoint(
    url: &str,
    tls: &ClientTlsFiles,
    connect_timeout: Duration,
) -> Result<Endpoint, TlsError> {
    Ok(volley_tls::client_endpoint(url, tls)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

/// Reads a token from `--token` / `VOLLEY_TOKEN`, or else from the file
/// `--token-file` / `VOLLEY_TOKEN_FILE` names (trailing whitespace trimmed).
pub fn token_from(token: Option<&str>, file: Option<&PathBuf>) -> Result<Option<String>, String> {
    if let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) {
        return Ok(Some(token.to_owned()));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|error| format!("--token-file {}: {error}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "--token-file {}: the file is empty",
            file.display()
        ));
    }
    Ok(Some(token.to_owned()))
}

/// Adds `authorization: Bearer <token>` to every call that has none yet
/// (a call may carry another token of its own: an op's capability).
#[derive(Clone, Debug, Default)]
pub struct BearerToken {
    header: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<BearerToken, ClientError> {
        let header = match token {
            Some(token) => Some(bearer_value(token)?),
            None => None,
        };
        Ok(BearerToken { header })
    }
}

/// `Bearer <token>` as a metadata value; a token that cannot be a header
/// (a newline, say) is refused without echoing it.
pub fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::Other {
            code: tonic::Code::Unauthenticated,
            message: "the token holds characters a header cannot carry".to_owned(),
        })
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header
            && !request.metadata().contains_key("authorization")
        {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}
