//! What the queue asks of whoever POSTs callbacks ([`Deliver`]) and how a delivery fails.
//!
//! A failure has a class, which is all the submitter sees (`callback.last_error`), and a
//! detail, which only the log sees. Why: the detail of a connection error (`Connection
//! refused`, `os error 111`, a TLS alert) told a client which ports of the host's network are
//! open; the class says what the operator of the receiver needs to know and no more.

use std::time::Duration;

use futures_util::future::BoxFuture;

/// One callback delivery to make.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Where to POST.
    pub url: String,
    /// The exact bytes to send (the job as JSON).
    pub body: bytes::Bytes,
    /// The [`super::SIGNATURE_HEADER`] value.
    pub signature: String,
    /// Bound on the whole delivery: resolving, connecting, sending, the answer.
    pub timeout: Duration,
}

/// The class of a failed delivery, as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, reset, DNS, TLS) or no valid HTTP answer.
    Unreachable,
    /// No answer within `jobs.callback_timeout_ms` (or no connection within
    /// `jobs.callback_connect_timeout_ms`).
    Timeout,
    /// The receiver answered this non-2xx status.
    Status(u16),
    /// The URL, or an address its host resolves to, is not a place callbacks may go.
    RefusedAddress,
    /// No signing key is configured (`jobs.callback_secret_env`).
    NotConfigured,
}

impl Failure {
    /// `unreachable`, `timeout`, `status 3xx`, `status 4xx`, `status 5xx`,
    /// `refused_address` or `not_configured`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Timeout => "timeout",
            Failure::Status(status) if status >= 500 => "status 5xx",
            Failure::Status(status) if status >= 400 => "status 4xx",
            Failure::Status(_) => "status 3xx",
            Failure::RefusedAddress => "refused_address",
            Failure::NotConfigured => "not_configured",
        }
    }
}

/// A failed delivery: its class and, for the log only, what exactly happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", class.as_str())]
pub struct DeliveryError {
    /// What the submitter sees.
    pub class: Failure,
    /// What the log sees.
    pub detail: String,
}

impl DeliveryError {
    /// A failure of `class` with `detail`.
    pub fn new(class: Failure, detail: impl Into<String>) -> DeliveryError {
        DeliveryError {
            class,
            detail: detail.into(),
        }
    }
}

/// POSTs a callback; `Ok` when the receiver answered 2xx.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers once.
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), DeliveryError>>;
}

impl<F, Fut> Deliver for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeliveryError>> + Send + 'static,
{
    fn deliver(&self, delivery: Delivery) -> BoxFuture<'static, Result<(), DeliveryError>> {
        Box::pin(self(delivery))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_shown_by_its_class_only() {
        assert_eq!(Failure::Status(500).as_str(), "status 5xx");
        assert_eq!(Failure::Status(503).as_str(), "status 5xx");
        assert_eq!(Failure::Status(404).as_str(), "status 4xx");
        assert_eq!(Failure::Status(301).as_str(), "status 3xx");
    }
}
