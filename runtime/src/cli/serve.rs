//! `weir serve --config <file>`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app::{App, spawn_watcher};
use crate::config::{Config, LogFormat};
use crate::server::serve;

/// Arguments of `weir serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Public listen address; overrides `server.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listen address; overrides `server.admin_listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// Loads the config, builds the app, serves until SIGTERM/SIGINT, drains, exits 0. Reloads
/// on file changes, SIGHUP and `POST /admin/reload`.
pub fn run(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let listen = args.listen.unwrap_or(config.server.listen);
    if config.state.node_id.is_none() {
        config.state.node_id = Some(crate::state::default_node_id(listen.port()));
    }
    let admin_listen = args.admin_listen.unwrap_or(config.server.admin_listen);
    // The config refuses a public `admin_listen` without a token; so does the override.
    if !admin_listen.ip().is_loopback() && config.server.admin_token.is_none() {
        eprintln!(
            "error: --admin-listen: {}",
            crate::config::exposed_admin_message(admin_listen)
        );
        return ExitCode::from(2);
    }
    let export =
        config
            .telemetry
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| crate::telemetry::Export {
                endpoint,
                service_name: &config.telemetry.service_name,
                sample_percent: config.telemetry.sample_percent,
            });
    let tracing = match crate::telemetry::init(config.server.log_format == LogFormat::Json, export)
    {
        Ok(tracing) => tracing,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let code = runtime.block_on(async move {
        let config_path = std::path::absolute(&args.config).unwrap_or(args.config.clone());
        let app = match App::build(config, Some(config_path)).await {
            Ok(app) => Arc::new(app),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        // Hot reload: file changes, SIGHUP (and POST /admin/reload).
        spawn_watcher(app.clone());
        #[cfg(unix)]
        {
            let app = app.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hangup.recv().await.is_some() {
                    app.reload("SIGHUP").await;
                }
            });
        }
        match serve(app.clone(), listen, admin_listen, super::shutdown_signal()).await {
            Ok(()) => {
                app.give_back_leases().await;
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    });
    // Outside the runtime: the exporter's client is a blocking one.
    drop(runtime);
    tracing.shutdown();
    code
}
