//! The callback sender: POSTs a job's result to its `callback_url`.
//!
//! It has its own client rather than the upstreams' one because its connector is the policy
//! enforcement point: for every new connection it checks the URL against the queue's
//! [`Destinations`] again (the config may have changed since submission), resolves the host
//! once, checks every address (private ranges, weir's own listeners), and connects to exactly
//! the addresses it checked, so a name cannot resolve to one address for the check and
//! another for the connection. TLS (for `https://`) runs over that connection with the URL's
//! host name. Redirects are not followed.
//!
//! Bounds: resolving and connecting within `jobs.callback_connect_timeout_ms`, the whole
//! delivery within `jobs.callback_timeout_ms`, and at most `jobs.callback_max_response_bytes`
//! of the answer read (it is not used; reading it lets the connection be reused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::JobsSettings;
use crate::queue::{
    CallbackUrlError, Delivery, DeliveryError, Destinations, Failure, ResolveError,
    SIGNATURE_HEADER,
};

/// Idle keep-alive connections kept per receiver.
const MAX_IDLE_PER_HOST: usize = 4;
/// How long an idle connection to a receiver is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs callbacks (cheap to clone).
#[derive(Clone)]
pub struct CallbackClient {
    /// hyper's pooled client over the checking connector.
    client: Client<hyper_rustls::HttpsConnector<Checked>, Full<Bytes>>,
    /// `jobs.callback_max_response_bytes`.
    max_response_bytes: u64,
}

impl CallbackClient {
    /// A client that connects only where `destinations` allows, with the bounds of `settings`.
    pub fn new(
        destinations: Arc<Destinations>,
        settings: &JobsSettings,
    ) -> std::io::Result<CallbackClient> {
        let checked = Checked {
            destinations,
            connect_timeout: settings.callback_connect_timeout,
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(std::io::Error::other)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(checked);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(https);
        Ok(CallbackClient {
            client,
            max_response_bytes: settings.callback_max_response_bytes,
        })
    }

    /// Delivers once: `Ok` when the receiver answered 2xx within `delivery.timeout`.
    pub async fn deliver(&self, delivery: Delivery) -> Result<(), DeliveryError> {
        let timeout = delivery.timeout;
        let deadline = Instant::now() + timeout;
        let response = tokio::time::timeout_at(deadline, self.send(delivery))
            .await
            .map_err(|_| {
                DeliveryError::new(Failure::Timeout, format!("no answer within {timeout:?}"))
            })??;
        let status = response.status();
        // The answer is not used: what arrives in time and within the bound is read so the
        // connection can be reused, and the rest is dropped with the connection.
        let _ = tokio::time::timeout_at(deadline, self.drain(response.into_body())).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::new(
                Failure::Status(status.as_u16()),
                format!("the receiver answered {status}"),
            ))
        }
    }

    /// Sends the request; the response once its headers arrived.
    async fn send(&self, delivery: Delivery) -> Result<http::Response<Incoming>, DeliveryError> {
        let uri: Uri = delivery.url.parse().map_err(|err| {
            DeliveryError::new(Failure::RefusedAddress, format!("not a URL: {err}"))
        })?;
        let signature = HeaderValue::from_str(&delivery.signature).map_err(|err| {
            DeliveryError::new(Failure::NotConfigured, format!("bad signature: {err}"))
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, signature)
            .body(Full::new(delivery.body))
            .map_err(|err| DeliveryError::new(Failure::RefusedAddress, err.to_string()))?;
        self.client.request(request).await.map_err(|err| {
            let detail = crate::providers::error_chain(&err);
            let class =
                std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .find_map(|e| e.downcast_ref::<ConnectError>())
                .map_or(Failure::Unreachable, ConnectError::class);
            DeliveryError::new(class, detail)
        })
    }

    /// Reads and drops the answer's body, up to the byte bound.
    async fn drain(&self, mut body: Incoming) {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read = read.saturating_add(data.len() as u64);
                if read > self.max_response_bytes {
                    return;
                }
            }
        }
    }
}

/// Why the connector made no connection.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    /// The URL or an address it resolves to is not a place callbacks may go.
    #[error("refused: {0}")]
    Refused(CallbackUrlError),
    /// No address answered, or the name did not resolve.
    #[error("{0}")]
    Unreachable(String),
    /// Resolving and connecting took longer than the bound.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    fn class(&self) -> Failure {
        match self {
            ConnectError::Refused(_) => Failure::RefusedAddress,
            ConnectError::Unreachable(_) => Failure::Unreachable,
            ConnectError::Timeout(_) => Failure::Timeout,
        }
    }
}

/// The connector: check, resolve once, check every address, connect to those addresses.
#[derive(Clone)]
struct Checked {
    /// The policy (shared with the submission check).
    destinations: Arc<Destinations>,
    /// `jobs.callback_connect_timeout_ms`.
    connect_timeout: Duration,
}

impl Checked {
    async fn connect(&self, uri: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
        let target = self
            .destinations
            .check_uri(&uri)
            .map_err(ConnectError::Refused)?;
        let addrs: Vec<SocketAddr> =
            self.destinations
                .resolve(&target)
                .await
                .map_err(|err| match err {
                    ResolveError::Refused(refused) => ConnectError::Refused(refused),
                    lookup @ ResolveError::Lookup { .. } => {
                        ConnectError::Unreachable(lookup.to_string())
                    }
                })?;
        let mut failures = Vec::new();
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Err(err) => failures.push(format!("{addr}: {err}")),
            }
        }
        Err(ConnectError::Unreachable(failures.join("; ")))
    }
}

impl tower_service::Service<Uri> for Checked {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bound = this.connect_timeout;
            tokio::time::timeout(bound, this.connect(uri))
                .await
                .map_err(|_| ConnectError::Timeout(bound))?
        })
    }
}

#[cfg(test)]
mod tests;
