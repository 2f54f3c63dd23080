//! `weir sim --listen <addr>`: the provider simulator, with faults from flags.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::sim::{Faults, Sim, SimConfig};

/// Arguments of `weir sim`. Faults can also be changed at runtime with `POST /sim/faults`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub listen: SocketAddr,
    /// Fraction of requests answered with `--error-status` (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Status of injected errors (default 500); a 401 quotes the request's bearer key,
    /// masked, as OpenAI does.
    #[arg(long, default_value_t = 500)]
    pub error_status: u16,
    /// Prompt tokens reported as billed in the usage of each injected error (0: none), as
    /// a provider that charges for a request that failed after reading it.
    #[arg(long, default_value_t = 0)]
    pub error_billed_tokens: u32,
    /// Fixed latency before every answer, ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Random extra latency, up to this many ms.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Fraction of requests accepted and never answered.
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Fraction of connections reset before any response byte.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Fraction of requests answered 429 with `Retry-After`.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    /// `Retry-After` seconds of injected 429s.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// Cut every stream after this many content chunks.
    #[arg(long)]
    pub stream_cut_after: Option<u32>,
    /// Stall every stream after this many content chunks: nothing more is sent and the
    /// connection stays open until the simulator stops.
    #[arg(long)]
    pub stream_stall_after: Option<u32>,
    /// Report this many prompt tokens in every completion's usage (any u64, e.g. 4294967295).
    #[arg(long)]
    pub usage_prompt_tokens: Option<u64>,
    /// Of the prompt tokens every completion reports, this many as read from the provider's
    /// prompt cache (`prompt_tokens_details.cached_tokens`).
    #[arg(long)]
    pub usage_cached_tokens: Option<u64>,
    /// Of the prompt tokens every completion reports, this many as written to the provider's
    /// prompt cache (`prompt_tokens_details.cache_creation_tokens`; Anthropic's
    /// `cache_creation_input_tokens`).
    #[arg(long)]
    pub usage_cache_write_tokens: Option<u64>,
    /// Injected errors send half their body, then stall until the simulator stops.
    #[arg(long)]
    pub error_body_stall: bool,
    /// A provider account's requests per minute: beyond this many in any 60-second window,
    /// answer 429 with `Retry-After`.
    #[arg(long)]
    pub rpm_limit: Option<u32>,
    /// The first this many answers to JSON-mode requests (`response_format`) are not JSON.
    #[arg(long)]
    pub invalid_json_first: Option<u64>,
    /// Stream time to first token, ms.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Stream delay between tokens, ms.
    #[arg(long, default_value_t = 0)]
    pub inter_token_ms: u64,
    /// Answer streamed completions whole, as JSON, like a provider that ignores `stream`.
    #[arg(long)]
    pub json_for_streams: bool,
    /// Report this model name instead of the requested one.
    #[arg(long)]
    pub model_name: Option<String>,
}

/// Runs the simulator until SIGTERM/SIGINT.
pub fn run(args: SimArgs) -> ExitCode {
    super::init_logging(false);
    let mut config = SimConfig::new(args.listen);
    config.faults = Faults {
        error_rate: args.error_rate,
        error_status: args.error_status,
        error_billed_tokens: args.error_billed_tokens,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        hang_rate: args.hang_rate,
        reset_rate: args.reset_rate,
        rate_limit_rate: args.rate_limit_rate,
        retry_after_s: args.retry_after_s,
        stream_cut_after: args.stream_cut_after,
        stream_stall_after: args.stream_stall_after,
        usage_prompt_tokens: args.usage_prompt_tokens,
        error_body_stall: args.error_body_stall,
        rpm_limit: args.rpm_limit,
        invalid_json_first: args.invalid_json_first,
        usage_cached_tokens: args.usage_cached_tokens,
        usage_cache_write_tokens: args.usage_cache_write_tokens,
        json_for_streams: args.json_for_streams,
    };
    config.ttft_ms = args.ttft_ms;
    config.inter_token_ms = args.inter_token_ms;
    config.model_name = args.model_name;
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let sim = match Sim::bind(config).await {
            Ok(sim) => sim,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        println!("weir sim: listening on http://{}", sim.local_addr());
        match sim.serve(super::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
