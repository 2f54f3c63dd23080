//! The calls through weir's own `weir:stage/services` import: a whole batch in one host call.
//!
//! The host treats them exactly as `wasi:http` requests to `http://<service><path>` (the same
//! grant, policy, deadline, call limit and answers); only the way in differs, one host call
//! per batch rather than some thirty resource calls per request.

use crate::bindings::weir::stage0_2_0::services as wit;

use super::{Call, ServiceError, ServiceResponse};

/// Sends every call at once and returns one answer per call, in order, bodies up to `limit`
/// bytes. The host checks each call (a path must start with `/`) before sending any.
pub(super) fn call_all(
    calls: &[Call<'_>],
    limit: usize,
) -> Vec<Result<ServiceResponse, ServiceError>> {
    let requests: Vec<wit::ServiceRequest> = calls
        .iter()
        .map(|call| wit::ServiceRequest {
            service: call.service.to_string(),
            method: call.method.as_str().to_string(),
            path: call.path.to_string(),
            headers: (call.headers.iter())
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec),
            max_body: u32::try_from(limit).unwrap_or(u32::MAX),
        })
        .collect();
    let mut answers = wit::call(&requests).into_iter();
    // The host answers every call; one it did not is a transport error, not a shorter list.
    calls
        .iter()
        .map(|call| match answers.next() {
            Some(Ok(answer)) => Ok(ServiceResponse {
                status: answer.status,
                headers: answer.headers,
                body: answer.body,
            }),
            Some(Err(err)) => Err(error(call.service, limit, err)),
            None => Err(ServiceError::Transport {
                service: call.service.to_string(),
                detail: "the host returned no answer for this call".to_string(),
            }),
        })
        .collect()
}

/// The host's error as a [`ServiceError`] (the same ones `wasi:http` gives).
fn error(service: &str, limit: usize, err: wit::ServiceError) -> ServiceError {
    let service = service.to_string();
    match err.kind {
        wit::ErrorKind::Denied => ServiceError::Denied { service },
        wit::ErrorKind::Transport => ServiceError::Transport {
            service,
            detail: err.detail,
        },
        wit::ErrorKind::BodyTooLarge => ServiceError::BodyTooLarge { service, limit },
        wit::ErrorKind::InvalidRequest => ServiceError::InvalidRequest(err.detail),
    }
}
