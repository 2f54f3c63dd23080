//! The process's rustls crypto provider. weir links only ring; reqwest (under the OCI client
//! and the OTLP exporter) takes the process default rather than choosing one, and panics
//! without it. Every client that goes through reqwest calls [`install_provider`] first.

/// Installs ring as the process's default provider (a no-op when one is installed).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
