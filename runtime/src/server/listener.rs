//! Accepting connections and shutting down gracefully: on the shutdown signal both listeners
//! stop accepting, in-flight requests and streams get `drain_timeout` to finish, then the
//! remaining connections are dropped.
//!
//! Each listener holds at most `server.max_connections` connections (a semaphore permit per
//! connection, released when its task ends); one more is closed as soon as it is accepted, so
//! a flood of connections costs a file descriptor for a moment, not a task and buffers. Each
//! connection runs under its [`ConnWatch`] (head, idle and write deadlines, see `conn.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::conn::ConnWatch;
use super::{App, admin, public};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which listener a connection came in on.
#[derive(Clone, Copy)]
enum Surface {
    /// `/v1/*` and health.
    Public,
    /// `/admin/*`, with the address the admin listener is bound to.
    Admin(SocketAddr),
}

impl Surface {
    /// The `listener` label of connection metrics.
    fn name(self) -> &'static str {
        match self {
            Surface::Public => "public",
            Surface::Admin(_) => "admin",
        }
    }
}

/// Serves `app` on `listen` and `admin_listen` until `shutdown` resolves, then drains.
/// Prints one line with the bound addresses (ports may be 0 in the config).
pub async fn serve(
    app: Arc<App>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let public_listener = bind(listen).await?;
    let admin_listener = bind(admin_listen).await?;
    let public_addr = public_listener.local_addr().unwrap_or(listen);
    let admin_addr = admin_listener.local_addr().unwrap_or(admin_listen);
    println!("weir: listening on http://{public_addr} (admin http://{admin_addr})");
    tracing::info!(%public_addr, %admin_addr, "listening");

    // Background jobs run from now on (the workers hold the app weakly); callbacks never go
    // to the addresses just bound.
    super::jobs::start(&app, &[public_addr, admin_addr]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    // The cap is fixed at start (a reload that changes it says a restart is needed); each
    // listener has its own, so a flood on the public port never locks the operator out.
    let max_connections = app.snapshot().config.server.connections.max_connections;
    let public_task = tokio::spawn(accept_loop(
        public_listener,
        app.clone(),
        Surface::Public,
        Arc::new(Semaphore::new(max_connections)),
        graceful.clone(),
        stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(accept_loop(
        admin_listener,
        app.clone(),
        Surface::Admin(admin_addr),
        Arc::new(Semaphore::new(max_connections)),
        graceful.clone(),
        stop_rx,
    ));

    shutdown.await;
    tracing::info!("shutdown: no new connections; draining in-flight requests");
    app.draining.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = public_task.await;
    let _ = admin_task.await;
    let drain = app.snapshot().config.server.drain_timeout;
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!(?drain, "drain timeout: dropping the remaining connections"),
    }
    if let Some(jobs) = &app.jobs
        && !jobs.shutdown(drain).await
    {
        tracing::warn!(
            ?drain,
            "shutdown: jobs still running run again at the next start"
        );
    }
    let ledger = app.ledger.clone();
    let flushed = tokio::task::spawn_blocking(move || ledger.flush(Duration::from_secs(5)))
        .await
        .unwrap_or(false);
    if !flushed {
        tracing::warn!("shutdown: the spend ledger did not finish writing within 5 s");
    }
    if let Some(state) = &app.state
        && !state.spend.flush(Duration::from_secs(5)).await
    {
        tracing::warn!(
            "shutdown: spend not yet shipped to the fleet's Redis (this node's ledger has it)"
        );
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    surface: Surface,
    slots: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, _peer) = match accepted {
            Ok(conn) => conn,
            Err(err) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed at once, before any buffer or task exists for it.
            drop(stream);
            crate::telemetry::connection_closed(surface.name(), "over_limit");
            tracing::debug!(
                listener = surface.name(),
                "connection refused: max_connections"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let watch = ConnWatch::new(app.snapshot().config.server.connections);
        let io = TokioIo::new(watch.io(stream));
        let app = app.clone();
        let requests = watch.clone();
        let service = service_fn(move |request| {
            // The head is parsed: the connection is busy until the response body is dropped.
            let in_request = requests.begin_request();
            let app = app.clone();
            async move {
                let response = match surface {
                    Surface::Public => public::handle(app, request).await,
                    Surface::Admin(listener) => {
                        let socket = admin::Socket {
                            listener,
                            local: local.unwrap_or(listener),
                        };
                        admin::handle(app, request, socket).await
                    }
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| in_request.guard(body)))
            }
        });
        // hyper's own head timer would also bound keep-alive waits (see conn.rs): off, the
        // watchdog below keeps the head, idle and write deadlines.
        let conn = http1::Builder::new()
            .keep_alive(true)
            .header_read_timeout(None)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        let listener = surface.name();
        tokio::spawn(async move {
            let _slot = slot;
            match watch.run(conn).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                Err(why) => {
                    crate::telemetry::connection_closed(listener, why.as_str());
                    tracing::debug!(listener, reason = why.as_str(), "connection closed");
                }
            }
        });
    }
}
