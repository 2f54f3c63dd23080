//! [`ServiceResponse`]: a service's answer, read whole.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

use super::ServiceError;

/// A service's answer: any status, the client checks it (the host answers a call that failed
/// on every upstream with a 5xx or 429 and an OpenAI-shaped error body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lower case, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, whole (at most the call's limit).
    pub body: Vec<u8>,
}

impl ServiceResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON into `T`; [`ServiceError::Json`] when it is not JSON or not
    /// a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        serde_json::from_slice(&self.body).map_err(|err| ServiceError::Json(err.to_string()))
    }

    /// The body as text, with invalid UTF-8 replaced by `�`.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The `error.message` of an OpenAI-shaped error body
    /// (`{"error": {"message": "...", ...}}`, what the host answers when every upstream of the
    /// service failed, and what many APIs answer), or `None` for any other body.
    pub fn error_message(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let message = body.get("error")?.get("message")?.as_str()?;
        Some(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn response(status: u16, body: &str) -> ServiceResponse {
        ServiceResponse {
            status,
            headers: vec![
                ("content-type".to_string(), b"application/json".to_vec()),
                (
                    "x-weir-service-error".to_string(),
                    b"upstream_error".to_vec(),
                ),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn success_is_2xx() {
        for status in [200, 201, 204, 299] {
            assert!(response(status, "").is_success(), "{status}");
        }
        for status in [100, 199, 300, 304, 404, 429, 502] {
            assert!(!response(status, "").is_success(), "{status}");
        }
    }

    #[test]
    fn json_parses_or_says_why_not() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Hit {
            id: String,
        }
        assert_eq!(
            response(200, r#"{"id": "a"}"#).json::<Hit>().ok(),
            Some(Hit {
                id: "a".to_string()
            })
        );
        match response(200, "<html>").json::<Hit>() {
            Err(ServiceError::Json(message)) => assert!(message.contains("line 1"), "{message}"),
            other => panic!("expected a JSON error, got {other:?}"),
        }
        match response(200, r#"{"id": 7}"#).json::<Hit>() {
            Err(ServiceError::Json(message)) => assert!(message.contains("invalid type")),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn text_and_headers() {
        let mut answer = response(200, "héllo");
        assert_eq!(answer.text(), "héllo");
        answer.body = vec![b'o', b'k', 0xff];
        assert_eq!(answer.text(), "ok\u{fffd}");
        assert_eq!(
            answer.header("Content-Type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(answer.header("retry-after"), None);
    }

    #[test]
    fn error_message_reads_openai_shaped_errors_only() {
        let failed = response(
            503,
            r#"{"error":{"message":"service search: every upstream failed","type":"server_error","code":"upstream_error"}}"#,
        );
        assert_eq!(
            failed.error_message().as_deref(),
            Some("service search: every upstream failed")
        );
        for other in [
            "",
            "not json",
            r#"{"error": "Collection not found"}"#,
            r#"{"error": {"code": 3}}"#,
            r#"{"message": "x"}"#,
        ] {
            assert_eq!(response(404, other).error_message(), None, "{other}");
        }
    }
}
