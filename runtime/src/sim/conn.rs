//! One accepted TCP connection: HTTP/1.1 with keep-alive, plus the two ways the simulator ends
//! a connection on purpose.
//!
//! A request handler cannot close its own connection through hyper, so each connection gets a
//! `ConnControl` that its handlers share. A handler that wants the connection gone (a reset
//! fault, or a hang at shutdown) signals it and never answers; the connection task, which
//! owns the socket, then takes it back from hyper and drops it — with `SO_LINGER` 0 for a
//! reset, so the kernel sends an RST instead of a FIN and the client reads
//! `ECONNRESET` ("connection reset by peer") rather than a clean end of stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::sim::router;
use crate::sim::state::SimState;

/// What the handlers of one connection can ask of it.
#[derive(Debug)]
pub struct ConnControl {
    /// Wakes the connection task to drop the connection.
    kill: Notify,
    /// Whether the drop must be a reset (RST) rather than a plain close (FIN).
    abortive: AtomicBool,
    /// Becomes `true` when the simulator starts shutting down.
    shutdown: watch::Receiver<bool>,
}

impl ConnControl {
    /// A control for a new connection of a simulator whose shutdown flag is `shutdown`.
    pub fn new(shutdown: watch::Receiver<bool>) -> ConnControl {
        ConnControl {
            kill: Notify::new(),
            abortive: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Drops the connection with a TCP reset; no response byte is written.
    pub fn reset(&self) {
        self.abortive.store(true, Ordering::Relaxed);
        self.kill.notify_one();
    }

    /// Drops the connection with a plain close; no further byte is written.
    pub fn close(&self) {
        self.kill.notify_one();
    }

    /// Resolves once the simulator has started shutting down.
    pub async fn shutdown_started(&self) {
        self.until_shutdown().await;
    }

    /// Like [`Self::shutdown_started`], but owning what it waits on, so a response body that
    /// stalls on purpose can hold it beyond the handler.
    pub fn until_shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            // An error means the simulator is gone, which is a shutdown too.
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        }
    }
}

/// Serves one connection until the client closes it, a handler kills it, or shutdown has
/// drained it (in-flight requests finish; an idle keep-alive connection closes at once).
pub async fn serve(stream: TcpStream, state: Arc<SimState>, mut shutdown: watch::Receiver<bool>) {
    let control = Arc::new(ConnControl::new(shutdown.clone()));
    let handler_control = Arc::clone(&control);
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        let control = Arc::clone(&handler_control);
        async move { Ok::<_, Infallible>(router::route(request, state, control).await) }
    });
    let mut connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut draining = false;
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "sim: connection ended with an error");
                }
                return;
            }
            () = control.kill.notified() => {
                let socket = connection.into_parts().io.into_inner();
                if control.abortive.load(Ordering::Relaxed)
                    && let Err(error) = socket.set_zero_linger()
                {
                    tracing::debug!(%error, "sim: cannot set SO_LINGER 0; closing normally");
                }
                drop(socket);
                return;
            }
            _ = shutdown.wait_for(|stopping| *stopping), if !draining => {
                draining = true;
                std::pin::Pin::new(&mut connection).graceful_shutdown();
            }
        }
    }
}
