//! The last requests that reached the simulator, served by `GET /sim/requests`, so a test can
//! see exactly what a proxy forwarded upstream (headers such as `authorization`, `traceparent`
//! and `x-request-id` included).
//!
//! Recording is on the hot path, so it only moves the already-parsed header map and a
//! reference-counted body into the ring under a briefly held mutex; turning them into JSON is
//! left to the (rare) reader.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use crate::sync::lock;

/// How many requests the ring keeps; older ones are forgotten.
pub const RING_CAPACITY: usize = 256;

/// How many bytes of each body the ring keeps (64 KiB), so a full ring of maximal bodies stays
/// at 16 MiB. Longer bodies are kept truncated and shown as text.
pub const RING_BODY_LIMIT: usize = 64 * 1024;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// The query (after `?`), if the request had one.
    pub query: Option<String>,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// The first `RING_BODY_LIMIT` bytes of the body.
    pub body: Bytes,
    /// Whether `body` was cut to `RING_BODY_LIMIT`.
    pub body_truncated: bool,
}

impl RecordedRequest {
    /// Builds a record of a request to `uri`, copying only the first `RING_BODY_LIMIT` bytes of
    /// a longer body (so the ring never pins a large buffer).
    pub fn new(method: Method, uri: &Uri, headers: HeaderMap, body: &Bytes) -> RecordedRequest {
        let (body, body_truncated) = if body.len() > RING_BODY_LIMIT {
            (Bytes::copy_from_slice(&body[..RING_BODY_LIMIT]), true)
        } else {
            (body.clone(), false)
        };
        RecordedRequest {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
            body_truncated,
        }
    }

    /// `{"method", "path", "headers": {name: value}, "body": <JSON or text>}`, plus `"query"`
    /// when the request had one; repeated headers are joined with ", ", and a truncated or
    /// non-JSON body is shown as (lossy UTF-8) text.
    pub fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for name in self.headers.keys() {
            let values: Vec<String> = self
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            headers.insert(name.as_str().to_owned(), values.join(", ").into());
        }
        let parsed: Option<serde_json::Value> = if self.body_truncated {
            None
        } else {
            serde_json::from_slice(&self.body).ok()
        };
        let body =
            parsed.unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned().into());
        let mut out = serde_json::json!({
            "method": self.method.as_str(),
            "path": self.path,
            "headers": headers,
            "body": body,
        });
        if let Some(query) = &self.query {
            out["query"] = query.as_str().into();
        }
        if self.body_truncated {
            out["body_truncated"] = true.into();
        }
        out
    }
}

/// Bounded ring of recorded requests, newest last.
#[derive(Debug, Default)]
pub struct RequestRing {
    /// At most `RING_CAPACITY` entries; the lock is held only to push, clear or clone.
    entries: Mutex<VecDeque<RecordedRequest>>,
}

impl RequestRing {
    /// Appends a request, forgetting the oldest when full.
    pub fn push(&self, request: RecordedRequest) {
        let evicted = {
            let mut entries = lock(&self.entries);
            let evicted = if entries.len() >= RING_CAPACITY {
                entries.pop_front()
            } else {
                None
            };
            entries.push_back(request);
            evicted
        };
        // Freed outside the lock.
        drop(evicted);
    }

    /// The last `n` requests, oldest first.
    pub fn last(&self, n: usize) -> Vec<RecordedRequest> {
        let entries = lock(&self.entries);
        let skip = entries.len().saturating_sub(n);
        entries.iter().skip(skip).cloned().collect()
    }

    /// Forgets every request.
    pub fn clear(&self) {
        let old = std::mem::take(&mut *lock(&self.entries));
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> RecordedRequest {
        let body = Bytes::from(format!("{{\"i\":{i}}}"));
        RecordedRequest::new(
            Method::POST,
            &Uri::from_static("/v1/x"),
            HeaderMap::new(),
            &body,
        )
    }

    #[test]
    fn keeps_the_newest_capacity_entries_in_order() {
        let ring = RequestRing::default();
        for i in 0..RING_CAPACITY + 10 {
            ring.push(record(i));
        }
        let all = ring.last(usize::MAX);
        assert_eq!(all.len(), RING_CAPACITY);
        assert_eq!(all[0].to_json()["body"]["i"], 10);
        let last_two = ring.last(2);
        assert_eq!(last_two[1].to_json()["body"]["i"], RING_CAPACITY + 9);
        ring.clear();
        assert!(ring.last(5).is_empty());
    }

    #[test]
    fn renders_headers_and_non_json_bodies() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", http::HeaderValue::from_static("Bearer k"));
        headers.append("x-multi", http::HeaderValue::from_static("a"));
        headers.append("x-multi", http::HeaderValue::from_static("b"));
        let uri = Uri::from_static("/p?api-version=2024-10-21");
        let r = RecordedRequest::new(Method::POST, &uri, headers, &Bytes::from("not json"));
        let json = r.to_json();
        assert_eq!(
            (&json["path"], &json["query"]),
            (&"/p".into(), &"api-version=2024-10-21".into())
        );
        assert_eq!(json["headers"]["authorization"], "Bearer k");
        assert_eq!(json["headers"]["x-multi"], "a, b");
        assert_eq!(json["body"], "not json");
    }

    #[test]
    fn long_bodies_are_truncated() {
        let big = Bytes::from(vec![b'a'; RING_BODY_LIMIT + 1]);
        let r = RecordedRequest::new(
            Method::POST,
            &Uri::from_static("/p"),
            HeaderMap::new(),
            &big,
        );
        assert!(r.to_json().get("query").is_none());
        assert_eq!(r.body.len(), RING_BODY_LIMIT);
        assert_eq!(r.to_json()["body_truncated"], true);
    }
}
