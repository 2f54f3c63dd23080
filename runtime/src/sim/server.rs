//! The simulator as a server: bind, accept, and shut down gracefully.
//!
//! Shutdown stops accepting at once, tells every connection to finish its in-flight request
//! and close (idle keep-alive connections close immediately; hanging requests are dropped),
//! and waits at most `SHUTDOWN_GRACE` for them before aborting the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::sim::config::SimConfig;
use crate::sim::conn;
use crate::sim::error::SimError;
use crate::sim::state::SimState;

/// How long `serve` waits, after shutdown, for in-flight requests (such as slow streams) to
/// finish before dropping their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again, so the
/// loop does not spin.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A bound simulator, ready to serve.
#[derive(Debug)]
pub struct Sim {
    /// The bound listener.
    listener: TcpListener,
    /// Its address (the real port when port 0 was asked for).
    local_addr: SocketAddr,
    /// Shared by every connection.
    state: Arc<SimState>,
}

impl Sim {
    /// Validates the config and binds the listener (port 0 allowed); `local_addr()` gives the
    /// bound address.
    pub async fn bind(config: SimConfig) -> Result<Sim, SimError> {
        config.faults.validate()?;
        let bind_error = |source| SimError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Sim {
            listener,
            local_addr,
            state: Arc::new(SimState::new(&config)),
        })
    }

    /// The address the simulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then drains connections (see the module docs).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SimError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(addr = %self.local_addr, "sim: listening");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%error, "sim: cannot set TCP_NODELAY");
                        }
                        let state = Arc::clone(&self.state);
                        connections.spawn(conn::serve(stream, state, stop_rx.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "sim: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        // Receivers outlive this sender only inside connection tasks, which all see `true`.
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "sim: connections still busy after the shutdown grace; dropping them"
            );
            connections.shutdown().await;
        }
        tracing::info!("sim: stopped");
        Ok(())
    }
}
