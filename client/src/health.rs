//! grpc.health.v1 probes of a coordinator or of a worker's `--health-listen`
//! address: one `Check`, or a `Watch` that yields every change.

use std::time::Duration;

use futures::Stream;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::source_chain;
use crate::error::ClientError;

/// What a health service says about a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    Serving,
    NotServing,
    /// The server does not know yet (grpc.health.v1 `UNKNOWN`).
    Unknown,
    /// The server has no such service (`Check` answered NOT_FOUND, or
    /// `Watch` sent `SERVICE_UNKNOWN`).
    ServiceUnknown,
}

impl HealthStatus {
    /// The grpc.health.v1 name: `SERVING`, `NOT_SERVING`, `UNKNOWN`,
    /// `SERVICE_UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Serving => "SERVING",
            HealthStatus::NotServing => "NOT_SERVING",
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }

    pub fn is_serving(self) -> bool {
        self == HealthStatus::Serving
    }

    fn from_wire(status: WireStatus) -> HealthStatus {
        match status {
            WireStatus::Serving => HealthStatus::Serving,
            WireStatus::NotServing => HealthStatus::NotServing,
            WireStatus::Unknown => HealthStatus::Unknown,
            WireStatus::ServiceUnknown => HealthStatus::ServiceUnknown,
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A connection to a grpc.health.v1 server. `""` is the whole server's
/// status; a coordinator also reports `volley.v1.BatchService`.
#[derive(Clone, Debug)]
pub struct HealthProbe {
    url: String,
    timeout: Duration,
    client: HealthClient<Channel>,
}

impl HealthProbe {
    /// Connects to `url` (`http://host:port`, or `host:port`) within
    /// `timeout`; [`check`](HealthProbe::check) has the same deadline.
    pub async fn connect(url: &str, timeout: Duration) -> Result<HealthProbe, ClientError> {
        HealthProbe::connect_with(&crate::Connection::new(url), timeout).await
    }

    /// [`HealthProbe::connect`] with TLS (health needs no token).
    pub async fn connect_with(
        connection: &crate::Connection,
        timeout: Duration,
    ) -> Result<HealthProbe, ClientError> {
        let url = connection.full_url();
        let endpoint = connection.endpoint(timeout)?;
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => return Err(ClientError::unreachable(&url, source_chain(&error))),
            Err(_) => {
                return Err(ClientError::unreachable(
                    &url,
                    format!(
                        "no connection within {}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
        };
        Ok(HealthProbe {
            url,
            timeout,
            client: HealthClient::new(channel),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `Check` of `service` (`""`: the whole server). A server that
    /// does not answer within the probe's timeout is unreachable.
    #[tracing::instrument(skip_all, fields(url = %self.url, service))]
    pub async fn check(&self, service: &str) -> Result<HealthStatus, ClientError> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout, client.check(request)).await {
            Ok(Ok(response)) => Ok(HealthStatus::from_wire(response.into_inner().status())),
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(HealthStatus::ServiceUnknown),
            Ok(Err(status)) => Err(ClientError::from(status)),
            Err(_) => Err(ClientError::unreachable(
                &self.url,
                format!(
                    "no health answer within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    /// `Watch` of `service`: the current status first, then every change,
    /// until the server goes away (the stream then ends with an error).
    #[tracing::instrument(skip_all, fields(url = %self.url, service))]
    pub async fn watch(
        &self,
        service: &str,
    ) -> Result<impl Stream<Item = Result<HealthStatus, ClientError>> + use<>, ClientError> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let mut client = self.client.clone();
        let stream = match tokio::time::timeout(self.timeout, client.watch(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == Code::NotFound => {
                let unknown: Result<HealthStatus, ClientError> = Ok(HealthStatus::ServiceUnknown);
                return Ok(futures::future::Either::Left(tokio_stream::once(unknown)));
            }
            Ok(Err(status)) => return Err(ClientError::from(status)),
            Err(_) => {
                return Err(ClientError::unreachable(
                    &self.url,
                    format!(
                        "no health answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                ));
            }
        };
        Ok(futures::future::Either::Right(stream.map(|item| {
            item.map(|response| HealthStatus::from_wire(response.status()))
                .map_err(ClientError::from)
        })))
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::server::HealthReporter;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A health server on a free port; its reporter and URL.
    async fn health_server() -> (HealthReporter, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (reporter, url)
    }

    #[tokio::test]
    async fn check_reports_each_status() {
        let (reporter, url) = health_server().await;
        let probe = HealthProbe::connect(&url, TIMEOUT).await.expect("connect");
        assert_eq!(probe.check("").await.expect("check"), HealthStatus::Serving);
        assert_eq!(
            probe.check("no.such.Service").await.expect("check"),
            HealthStatus::ServiceUnknown
        );
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            probe.check("").await.expect("check"),
            HealthStatus::NotServing
        );
    }

    #[tokio::test]
    async fn watch_yields_every_change() {
        let (reporter, url) = health_server().await;
        let probe = HealthProbe::connect(&url, TIMEOUT).await.expect("connect");
        let mut changes = Box::pin(probe.watch("").await.expect("watch"));
        let mut seen = Vec::new();
        for change in 0..2 {
            if change == 1 {
                reporter
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
            let status = tokio::time::timeout(TIMEOUT, changes.next())
                .await
                .expect("a change in time")
                .expect("the stream goes on")
                .expect("a status");
            seen.push(status);
        }
        assert_eq!(seen, [HealthStatus::Serving, HealthStatus::NotServing]);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let error = HealthProbe::connect(&format!("127.0.0.1:{port}"), TIMEOUT)
            .await
            .expect_err("nothing listens there");
        assert!(
            matches!(error, ClientError::Unreachable { ref url, .. } if url == &format!("http://127.0.0.1:{port}")),
            "{error:?}"
        );
    }
}
