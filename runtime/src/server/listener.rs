//! Accepting connections and shutting down gracefully: on the shutdown signal both listeners
//! stop accepting, in-flight requests and streams get `drain_timeout` to finish, then the
//! remaining connections are dropped.

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
use tokio::sync::watch;

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
    /// `/admin/*`.
    Admin,
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
    app.start_jobs(&[public_addr, admin_addr]);
    let (stop_tx, stop_rx) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let public_task = tokio::spawn(accept_loop(
        public_listener,
        app.clone(),
        Surface::Public,
        graceful.clone(),
        stop_rx.clone(),
    ));
    let admin_task = tokio::spawn(accept_loop(
        admin_listener,
        app.clone(),
        Surface::Admin,
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
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    surface: Surface,
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match surface {
                    Surface::Public => public::handle(app, request).await,
                    Surface::Admin => admin::handle(app, request).await,
                })
            }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}
