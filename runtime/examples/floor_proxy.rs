//! The floor of weir's own stack, for `bench/floor.sh`: a plain HTTP/1 reverse proxy on the
//! same tokio runtime, hyper server and hyper-util pooled client that `weir serve` uses, with
//! nothing else on the path (no JSON, no routing, no telemetry, the bodies streamed through).
//! What it adds to the upstream's latency is what this stack costs here before weir does any
//! work of its own.
//!
//! ```text
//! cargo run --release -p weir --example floor_proxy -- 127.0.0.1:9650 http://127.0.0.1:9601
//! ```
//!
//! `TOKIO_WORKER_THREADS` sets the runtime's workers, as it does for `weir serve`.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor_proxy LISTEN_ADDR UPSTREAM_URL";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: Uri = args.next().ok_or(usage)?.parse()?;
    let authority = upstream.authority().ok_or(usage)?.clone();

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, authority) = (client.clone(), authority.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let client = client.clone();
                let mut parts = request.uri().clone().into_parts();
                parts.scheme = Some(http::uri::Scheme::HTTP);
                parts.authority = Some(authority.clone());
                async move {
                    let answer: Response<Body> = match Uri::from_parts(parts) {
                        Ok(uri) => {
                            *request.uri_mut() = uri;
                            match client.request(request).await {
                                Ok(response) => response.map(BodyExt::boxed),
                                Err(err) => bad_gateway(err),
                            }
                        }
                        Err(err) => bad_gateway(err),
                    };
                    Ok::<_, Infallible>(answer)
                }
            });
            let io = TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn bad_gateway(err: impl std::fmt::Display) -> Response<Body> {
    let body = Full::new(Bytes::from(err.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
