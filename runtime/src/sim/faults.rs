//! The fault settings of the simulator: what chaos to inject, as plain data.
//!
//! `Faults` is the one description of chaos, shared by the CLI, `SimConfig` and the runtime
//! `POST /sim/faults` endpoint, so every fault is settable from each of them. It owns the
//! validation of those settings; rolling the dice lives in `chaos`, which must only ever see
//! validated faults (so it never has to guard against a rate of 7 or a status of 200).

use serde::{Deserialize, Serialize};

/// Largest accepted `latency_ms` and `jitter_ms` (one hour each): anything longer is a typo,
/// and a client would have given up long before.
pub const MAX_LATENCY_MS: u64 = 3_600_000;

/// Status answered by the error fault when `Faults::error_status` is 0.
pub const DEFAULT_ERROR_STATUS: u16 = 500;

/// Chaos to inject into completion and embedding requests.
///
/// Every field defaults to "no fault", so a JSON body naming only some fields resets the
/// others. Dice are rolled per request in the order hang, reset, rate limit, error; the first
/// that hits decides the request. Latency applies to every request, before its answer.
///
/// The fields added after the first release (`stream_stall_after`, `usage_prompt_tokens`,
/// `error_body_stall`) are left out of the JSON form while they are off, so the faults a
/// client reads back look as they always did unless it uses them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability (0..=1) of answering `error_status` with an OpenAI-shaped error body.
    pub error_rate: f64,
    /// Status of the error fault, 400..=599; 0 means `DEFAULT_ERROR_STATUS` (500). A 401
    /// answers like OpenAI's: code `invalid_api_key` and a message quoting the bearer key the
    /// simulator received, masked but for its first 3 and last 4 characters.
    pub error_status: u16,
    /// Prompt tokens the error fault reports as billed in a `usage` object of its body (0:
    /// no usage), like a provider that charges for a request that failed after reading it.
    pub error_billed_tokens: u32,
    /// Fixed delay in milliseconds before answering, at most `MAX_LATENCY_MS`.
    pub latency_ms: u64,
    /// Extra delay in milliseconds drawn uniformly from `0..=jitter_ms`, at most `MAX_LATENCY_MS`.
    pub jitter_ms: u64,
    /// Probability (0..=1) of reading the request and never answering, holding the connection
    /// until the client gives up or the simulator shuts down.
    pub hang_rate: f64,
    /// Probability (0..=1) of reading the request and then resetting the TCP connection (RST,
    /// no response bytes at all).
    pub reset_rate: f64,
    /// Probability (0..=1) of answering 429 `rate_limit_exceeded` with a `Retry-After` header.
    pub rate_limit_rate: f64,
    /// Value in seconds of the `Retry-After` header sent with a rate-limit fault.
    pub retry_after_s: u64,
    /// For streamed completions: send at most this many content chunks, then drop the
    /// connection without the final chunk or `data: [DONE]`. `None` leaves streams whole.
    pub stream_cut_after: Option<u32>,
    /// For streamed completions: send at most this many content chunks, then stall — send
    /// nothing more and keep the connection open — until the simulator shuts down. `None`
    /// leaves streams whole. Cannot be combined with `stream_cut_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_stall_after: Option<u32>,
    /// Prompt tokens reported in the `usage` of every completion (JSON answers and the usage
    /// chunk of streams) instead of the real count; any `u64`, so a client can be tested
    /// against absurd usage such as 4294967295. `total_tokens` saturates. `None` reports the
    /// real count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_prompt_tokens: Option<u64>,
    /// The error and rate-limit faults send their status line, headers and the first half of
    /// their body, then stall until the simulator shuts down, like a provider that dies while
    /// answering. False sends the whole body.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub error_body_stall: bool,
    /// A provider account's requests-per-minute limit: beyond this many requests accepted in
    /// any 60-second window, answer 429 `rate_limit_exceeded` with `Retry-After` (see
    /// `sim::minute`). Checked before the other faults. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u32>,
    /// The first this many answers to JSON-mode requests (`response_format` of type
    /// `json_object` or `json_schema`) after the faults were set are not JSON (a model that
    /// ignored the format); later ones are `{"answer": "<the reply>"}`. `None`: every one is
    /// valid JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_json_first: Option<u64>,
    /// Of the prompt tokens every completion reports, this many as read from the provider's
    /// prompt cache (`usage.prompt_tokens_details.cached_tokens`; Anthropic's
    /// `cache_read_input_tokens`). `None`: no prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_cached_tokens: Option<u64>,
    /// Of the prompt tokens every completion reports, this many as written to the provider's
    /// prompt cache (`usage.prompt_tokens_details.cache_creation_tokens`; Anthropic's
    /// `cache_creation_input_tokens`). `None`: no cache writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_cache_write_tokens: Option<u64>,
    /// Streamed completions are answered whole, as JSON (`application/json`), like a
    /// provider or proxy that ignores `stream: true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub json_for_streams: bool,
}

/// What the usage faults make a completion report instead of its real usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageFaults {
    /// `usage_prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `usage_cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// `usage_cache_write_tokens`.
    pub cache_write_tokens: Option<u64>,
}

/// Why a `Faults` value was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultsError {
    /// The body is not a JSON `Faults` object (syntax, a wrong type, or an unknown field).
    #[error("{0}")]
    Json(String),
    /// A probability outside `0..=1` (or not a number).
    #[error("{field} must be a probability between 0 and 1, got {value}")]
    Rate {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// An error status that is not an HTTP error status.
    #[error("error_status must be 0 (meaning 500) or within 400..=599, got {0}")]
    Status(u16),
    /// A delay above `MAX_LATENCY_MS`.
    #[error("{field} must be at most {MAX_LATENCY_MS} ms, got {value}")]
    Latency {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An `rpm_limit` of 0.
    #[error("rpm_limit must be at least 1, got 0")]
    RpmLimit,
    /// Both ways of ending a stream early at once.
    #[error("stream_cut_after and stream_stall_after cannot both be set")]
    CutAndStall,
}

impl Faults {
    /// The faults that change the usage a completion reports.
    pub fn usage(&self) -> UsageFaults {
        UsageFaults {
            prompt_tokens: self.usage_prompt_tokens,
            cached_tokens: self.usage_cached_tokens,
            cache_write_tokens: self.usage_cache_write_tokens,
        }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), FaultsError> {
        let rates = [
            ("error_rate", self.error_rate),
            ("hang_rate", self.hang_rate),
            ("reset_rate", self.reset_rate),
            ("rate_limit_rate", self.rate_limit_rate),
        ];
        for (field, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::Rate { field, value });
            }
        }
        if self.error_status != 0 && !(400..=599).contains(&self.error_status) {
            return Err(FaultsError::Status(self.error_status));
        }
        for (field, value) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
        ] {
            if value > MAX_LATENCY_MS {
                return Err(FaultsError::Latency { field, value });
            }
        }
        if self.rpm_limit == Some(0) {
            return Err(FaultsError::RpmLimit);
        }
        if self.stream_cut_after.is_some() && self.stream_stall_after.is_some() {
            return Err(FaultsError::CutAndStall);
        }
        Ok(())
    }

    /// The status the error fault answers with (`error_status`, or 500 when it is 0).
    pub fn effective_error_status(&self) -> u16 {
        if self.error_status == 0 {
            DEFAULT_ERROR_STATUS
        } else {
            self.error_status
        }
    }

    /// Parses and validates a JSON body, as `POST /sim/faults` receives it.
    pub fn from_json(body: &[u8]) -> Result<Faults, FaultsError> {
        let faults: Faults =
            serde_json::from_slice(body).map_err(|e| FaultsError::Json(e.to_string()))?;
        faults.validate()?;
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_no_fault() {
        assert_eq!(Faults::from_json(b"{}"), Ok(Faults::default()));
    }

    #[test]
    fn named_fields_parse_and_others_default() {
        let f = Faults::from_json(br#"{"error_rate":0.25,"stream_cut_after":3}"#);
        let expected = Faults {
            error_rate: 0.25,
            stream_cut_after: Some(3),
            ..Faults::default()
        };
        assert_eq!(f, Ok(expected));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = Faults::from_json(br#"{"eror_rate":0.5}"#)
            .expect_err("typo must be rejected")
            .to_string();
        assert!(err.contains("unknown field `eror_rate`"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        assert!(Faults::from_json(br#"{"hang_rate":1.5}"#).is_err());
        assert!(Faults::from_json(br#"{"reset_rate":-0.1}"#).is_err());
        assert!(Faults::from_json(br#"{"error_status":200}"#).is_err());
        assert!(Faults::from_json(br#"{"latency_ms":3600001}"#).is_err());
        assert!(Faults::from_json(br#"{"error_rate":"x"}"#).is_err());
        let nan = Faults {
            error_rate: f64::NAN,
            ..Faults::default()
        };
        assert!(matches!(nan.validate(), Err(FaultsError::Rate { .. })));
    }

    #[test]
    fn error_status_zero_means_500() {
        assert_eq!(Faults::default().effective_error_status(), 500);
        let f = Faults {
            error_status: 503,
            ..Faults::default()
        };
        assert_eq!(f.effective_error_status(), 503);
    }

    #[test]
    fn round_trips_through_json() {
        let f = Faults {
            error_rate: 0.1,
            error_status: 502,
            error_billed_tokens: 11,
            latency_ms: 20,
            jitter_ms: 5,
            hang_rate: 0.01,
            reset_rate: 0.02,
            rate_limit_rate: 0.03,
            retry_after_s: 7,
            stream_cut_after: Some(4),
            stream_stall_after: None,
            usage_prompt_tokens: Some(u64::from(u32::MAX)),
            error_body_stall: true,
            rpm_limit: Some(120),
            invalid_json_first: Some(2),
            usage_cached_tokens: Some(3),
            usage_cache_write_tokens: Some(5),
            json_for_streams: true,
        };
        let json = serde_json::to_vec(&f).expect("faults serialize");
        assert_eq!(Faults::from_json(&json), Ok(f));
    }

    #[test]
    fn new_fields_are_left_out_while_off() {
        let json = serde_json::to_value(Faults::default()).expect("faults serialize");
        for field in [
            "stream_stall_after",
            "usage_prompt_tokens",
            "error_body_stall",
            "rpm_limit",
            "usage_cached_tokens",
            "usage_cache_write_tokens",
            "json_for_streams",
        ] {
            assert!(json.get(field).is_none(), "{field}: {json}");
        }
        assert!(json.get("stream_cut_after").is_some());
    }

    #[test]
    fn a_stream_is_cut_or_stalled_not_both() {
        assert_eq!(
            Faults::from_json(br#"{"stream_cut_after":1,"stream_stall_after":2}"#),
            Err(FaultsError::CutAndStall)
        );
        assert!(Faults::from_json(br#"{"stream_stall_after":0}"#).is_ok());
    }
}
