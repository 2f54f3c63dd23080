//! Rolling the fault dice for one request and carrying out the outcome.
//!
//! The decision (`roll`) is a pure function of the faults, the model name and a random source,
//! so its order and rates are unit-tested with a seeded generator; `apply` then does what was
//! decided, and is the only place that delays, hangs or resets a request.
//!
//! Besides the dice, a model named `sim-error-NNN` (NNN in 400..=599) always fails with that
//! status, so one simulator can play a failing primary model and a healthy fallback at once.

use std::time::Duration;

use http::Response;
use rand::Rng;

use crate::sim::body::{self, SimBody};
use crate::sim::conn::ConnControl;
use crate::sim::error::ApiError;
use crate::sim::faults::Faults;
use crate::sim::state::SimState;
use crate::sim::stats::bump;

/// Prefix of the model names that always fail.
pub const ERROR_MODEL_PREFIX: &str = "sim-error-";

/// What happens to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Never answer.
    Hang,
    /// Reset the connection.
    Reset,
    /// Answer this error.
    Fail(ApiError),
    /// Answer normally.
    Answer,
}

/// Rolls hang, reset, rate limit and error in that order (one die each); the first hit decides.
/// With no hit, a `sim-error-NNN` model still fails.
pub fn roll(faults: &Faults, model: Option<&str>, rng: &mut impl Rng) -> Outcome {
    let mut hit = |rate: f64| rate > 0.0 && rng.random::<f64>() < rate;
    if hit(faults.hang_rate) {
        return Outcome::Hang;
    }
    if hit(faults.reset_rate) {
        return Outcome::Reset;
    }
    let rate_limited = ApiError::RateLimited {
        retry_after_s: faults.retry_after_s,
    };
    if hit(faults.rate_limit_rate) {
        return Outcome::Fail(rate_limited);
    }
    if hit(faults.error_rate) {
        let status = faults.effective_error_status();
        return Outcome::Fail(ApiError::Injected {
            status,
            billed_tokens: faults.error_billed_tokens,
        });
    }
    match model.and_then(error_model_status) {
        Some(429) => Outcome::Fail(rate_limited),
        Some(status) => Outcome::Fail(ApiError::Injected {
            status,
            billed_tokens: 0,
        }),
        None => Outcome::Answer,
    }
}

/// The status of a `sim-error-NNN` model name.
fn error_model_status(model: &str) -> Option<u16> {
    let status: u16 = model.strip_prefix(ERROR_MODEL_PREFIX)?.parse().ok()?;
    (400..=599).contains(&status).then_some(status)
}

/// `latency_ms` plus a uniform draw from `0..=jitter_ms`.
pub fn delay(faults: &Faults, rng: &mut impl Rng) -> Duration {
    let jitter = if faults.jitter_ms > 0 {
        rng.random_range(0..=faults.jitter_ms)
    } else {
        0
    };
    Duration::from_millis(faults.latency_ms.saturating_add(jitter))
}

/// What the dice decided for one request: its outcome, and the latency before it.
#[derive(Debug)]
pub struct Decision {
    /// What happens to the request.
    pub outcome: Outcome,
    /// How long to wait before carrying it out.
    pub wait: Duration,
}

/// Rolls the dice for a request on `model` (see [`roll`] and [`delay`]).
pub fn decide(faults: &Faults, model: Option<&str>) -> Decision {
    // ThreadRng is not Send; it never lives across an await.
    let mut rng = rand::rng();
    Decision {
        outcome: roll(faults, model, &mut rng),
        wait: delay(faults, &mut rng),
    }
}

/// Applies the faults to a request: waits out the latency, then returns the fault response, or
/// `None` when the request should be answered normally. A hang or a reset never returns: the
/// connection task drops the connection (at shutdown for a hang, at once for a reset).
/// `bearer` is the request's bearer key, which an injected 401 quotes.
pub async fn apply(
    faults: &Faults,
    model: Option<&str>,
    bearer: Option<&str>,
    state: &SimState,
    conn: &ConnControl,
) -> Option<Response<SimBody>> {
    carry_out(decide(faults, model), faults, bearer, state, conn).await
}

/// [`apply`] with the dice already rolled, for a caller that acts on the decision before its
/// latency (the chat endpoint bills a request it accepted at once).
pub async fn carry_out(
    decision: Decision,
    faults: &Faults,
    bearer: Option<&str>,
    state: &SimState,
    conn: &ConnControl,
) -> Option<Response<SimBody>> {
    let Decision { outcome, wait } = decision;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    match outcome {
        Outcome::Answer => None,
        Outcome::Fail(err) => {
            let err = match err {
                ApiError::Injected {
                    status,
                    billed_tokens,
                } => ApiError::injected(status, billed_tokens, bearer),
                other => other,
            };
            match err {
                ApiError::RateLimited { .. } => bump(&state.stats.rate_limited),
                _ => bump(&state.stats.errors),
            }
            if faults.error_body_stall {
                return Some(body::stalled_error(&err, conn.until_shutdown()));
            }
            Some(body::error(&err))
        }
        Outcome::Hang => {
            bump(&state.stats.hangs);
            conn.shutdown_started().await;
            conn.close();
            std::future::pending().await
        }
        Outcome::Reset => {
            bump(&state.stats.resets);
            conn.reset();
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn no_faults_answers() {
        assert_eq!(roll(&Faults::default(), None, &mut rng()), Outcome::Answer);
        assert_eq!(delay(&Faults::default(), &mut rng()), Duration::ZERO);
    }

    #[test]
    fn dice_are_rolled_in_documented_order() {
        let all = Faults {
            hang_rate: 1.0,
            reset_rate: 1.0,
            rate_limit_rate: 1.0,
            error_rate: 1.0,
            retry_after_s: 4,
            ..Faults::default()
        };
        assert_eq!(roll(&all, None, &mut rng()), Outcome::Hang);
        let no_hang = Faults {
            hang_rate: 0.0,
            ..all.clone()
        };
        assert_eq!(roll(&no_hang, None, &mut rng()), Outcome::Reset);
        let no_reset = Faults {
            reset_rate: 0.0,
            ..no_hang
        };
        let limited = Outcome::Fail(ApiError::RateLimited { retry_after_s: 4 });
        assert_eq!(roll(&no_reset, None, &mut rng()), limited);
        let only_error = Faults {
            rate_limit_rate: 0.0,
            ..no_reset
        };
        let failed = Outcome::Fail(ApiError::Injected {
            status: 500,
            billed_tokens: 0,
        });
        assert_eq!(roll(&only_error, None, &mut rng()), failed);
    }

    #[test]
    fn rates_are_probabilities() {
        let half = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        let mut r = rng();
        let fails = (0..10_000)
            .filter(|_| roll(&half, None, &mut r) != Outcome::Answer)
            .count();
        assert!((4_500..5_500).contains(&fails), "{fails} of 10000");
    }

    #[test]
    fn error_models_always_fail() {
        let f = Faults::default();
        let failed = Outcome::Fail(ApiError::Injected {
            status: 503,
            billed_tokens: 0,
        });
        assert_eq!(roll(&f, Some("sim-error-503"), &mut rng()), failed);
        let limited = Outcome::Fail(ApiError::RateLimited { retry_after_s: 0 });
        assert_eq!(roll(&f, Some("sim-error-429"), &mut rng()), limited);
        assert_eq!(roll(&f, Some("sim-error-200"), &mut rng()), Outcome::Answer);
        assert_eq!(roll(&f, Some("sim-error-x"), &mut rng()), Outcome::Answer);
    }

    #[test]
    fn delay_is_latency_plus_bounded_jitter() {
        let f = Faults {
            latency_ms: 20,
            jitter_ms: 5,
            ..Faults::default()
        };
        let mut r = rng();
        for _ in 0..1000 {
            let d = delay(&f, &mut r);
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(25));
        }
    }
}
