//! How a simulator is started: its address, its initial faults and its streaming pace.
//!
//! `SimConfig` is plain data with public fields so that the CLI (or a test) can fill it without
//! a builder; `Sim::bind` validates it once.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::sim::faults::Faults;

/// Address `weir sim` listens on when none is given: loopback, port 9101.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9101));

/// Everything `Sim::bind` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port (see `Sim::local_addr`).
    pub listen: SocketAddr,
    /// Faults in force at start; `POST /sim/faults` replaces them at run time.
    pub faults: Faults,
    /// For streamed completions, milliseconds before the first chunk (time to first token).
    /// Default 0.
    pub ttft_ms: u64,
    /// For streamed completions, milliseconds between two content chunks. Default 0.
    pub inter_token_ms: u64,
    /// When set, every response names this model instead of the one in the request.
    pub model_name: Option<String>,
}

impl SimConfig {
    /// A configuration listening on `listen` with no faults, no pacing and no model override.
    pub fn new(listen: SocketAddr) -> SimConfig {
        SimConfig {
            listen,
            faults: Faults::default(),
            ttft_ms: 0,
            inter_token_ms: 0,
            model_name: None,
        }
    }
}

impl Default for SimConfig {
    /// Listens on `DEFAULT_LISTEN` (127.0.0.1:9101) with no faults.
    fn default() -> SimConfig {
        SimConfig::new(DEFAULT_LISTEN)
    }
}
