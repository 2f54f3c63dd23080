//! Cache keys: blake3 over a versioned, prefix-free canonical encoding of every request field
//! that can change the answer.
//!
//! The request is destructured field by field, so adding a field to the WIT `chat-request`
//! is a compile error here until someone decides whether it belongs to the key. Each value is
//! written as a tag byte, a length and the bytes, so no two different requests can encode to
//! the same byte string. `extra` is canonicalised (keys sorted at every level) and loses
//! `stream_options`, which changes how an answer is delivered, not what it says.

use serde_json::Value;

use crate::wit::{ChatRequest, Content, ContentPart, Message};

/// The key of one cache entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Lowercase hex, for file names and logs.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

/// Fields of `extra` that do not change the answer.
const EXTRA_EXCLUDED: &[&str] = &["stream_options"];

/// The key of a chat request on `route`, with `tenant` when the route keys by tenant.
pub fn request_key(route: &str, tenant: Option<&str>, request: &ChatRequest) -> CacheKey {
    // Destructure: a new field must be placed on one side or the other.
    let ChatRequest {
        model,
        messages,
        temperature,
        top_p,
        max_tokens,
        stream: _,   // JSON and SSE answers are interchangeable
        user: _,     // an end-user id for abuse tracking, not an input of the model
        metadata: _, // request tags (OpenAI stores them; the model does not see them)
        extra,
    } = request;
    let mut c = Canon::new(b"weir-cache/v1/chat");
    c.str(b'r', route);
    c.opt_str(b't', tenant);
    c.str(b'm', model);
    c.len(b'n', messages.len());
    for message in messages {
        c.message(message);
    }
    c.opt_f64(b'T', *temperature);
    c.opt_f64(b'P', *top_p);
    c.opt_u64(b'M', max_tokens.map(u64::from));
    c.json(b'x', extra, EXTRA_EXCLUDED);
    CacheKey(*c.hasher.finalize().as_bytes())
}

/// The key of a client's `/v1/embeddings` body on `route`, with `tenant` when the route keys
/// by tenant: every field but `user` (an end-user id, not an input of the model), canonical.
/// Its own domain, so no embeddings key can equal a chat key.
pub fn embeddings_key(route: &str, tenant: Option<&str>, body: &Value) -> CacheKey {
    let mut c = Canon::new(b"weir-cache/v1/embeddings");
    c.str(b'r', route);
    c.opt_str(b't', tenant);
    let mut body = body.clone();
    if let Value::Object(map) = &mut body {
        map.remove("user");
    }
    c.str(b'b', &body.to_string());
    CacheKey(*c.hasher.finalize().as_bytes())
}

/// The key of a deterministic stage's `on-request` output: the stage version (component
/// blake3), its config, the route, and the whole request as the stage sees it — every field,
/// `metadata`, `user` and `stream` included, since a stage may read any of them.
pub fn stage_input_key(
    component: &[u8; 32],
    config: &std::collections::BTreeMap<String, String>,
    route: &str,
    request: &ChatRequest,
) -> CacheKey {
    let ChatRequest {
        model,
        messages,
        temperature,
        top_p,
        max_tokens,
        stream,
        user,
        metadata,
        extra,
    } = request;
    let mut c = Canon::new(b"weir-cache/v1/stage-input");
    c.bytes(b'S', component);
    c.len(b'g', config.len());
    for (key, value) in config {
        c.str(b'k', key);
        c.str(b'v', value);
    }
    c.str(b'r', route);
    c.str(b'm', model);
    c.len(b'n', messages.len());
    for message in messages {
        c.message(message);
    }
    c.opt_f64(b'T', *temperature);
    c.opt_f64(b'P', *top_p);
    c.opt_u64(b'M', max_tokens.map(u64::from));
    c.opt_u64(b's', Some(u64::from(*stream)));
    c.opt_str(b'u', user.as_deref());
    c.len(b'd', metadata.len());
    for (key, value) in metadata {
        c.str(b'k', key);
        c.str(b'v', value);
    }
    c.json(b'x', extra, &[]);
    CacheKey(*c.hasher.finalize().as_bytes())
}

/// A prefix-free writer into a blake3 hasher.
struct Canon {
    /// The running hash.
    hasher: blake3::Hasher,
}

impl Canon {
    fn new(domain: &[u8]) -> Canon {
        let mut canon = Canon {
            hasher: blake3::Hasher::new(),
        };
        canon.bytes(b'v', domain);
        canon
    }

    fn bytes(&mut self, tag: u8, bytes: &[u8]) {
        self.hasher.update(&[tag]);
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    fn str(&mut self, tag: u8, s: &str) {
        self.bytes(tag, s.as_bytes());
    }

    fn len(&mut self, tag: u8, n: usize) {
        self.hasher.update(&[tag]);
        self.hasher.update(&(n as u64).to_le_bytes());
    }

    fn opt_str(&mut self, tag: u8, s: Option<&str>) {
        match s {
            None => {
                self.hasher.update(&[tag, 0]);
            }
            Some(s) => {
                self.hasher.update(&[tag, 1]);
                self.str(tag, s);
            }
        }
    }

    fn opt_u64(&mut self, tag: u8, n: Option<u64>) {
        match n {
            None => {
                self.hasher.update(&[tag, 0]);
            }
            Some(n) => {
                self.hasher.update(&[tag, 1]);
                self.hasher.update(&n.to_le_bytes());
            }
        }
    }

    fn opt_f64(&mut self, tag: u8, x: Option<f64>) {
        // -0.0 and 0.0 ask the same thing.
        self.opt_u64(tag, x.map(|x| if x == 0.0 { 0.0f64 } else { x }.to_bits()));
    }

    /// A JSON object string, canonicalised (serde_json's map keeps keys sorted), without
    /// the `excluded` top-level keys. Text that is not JSON is keyed as it is.
    fn json(&mut self, tag: u8, text: &str, excluded: &[&str]) {
        match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                if let Value::Object(map) = &mut value {
                    for key in excluded {
                        map.remove(*key);
                    }
                }
                self.str(tag, &value.to_string());
            }
            Err(_) => self.str(tag.wrapping_add(1), text),
        }
    }

    fn message(&mut self, message: &Message) {
        let Message {
            role,
            content,
            name,
            extra,
        } = message;
        self.str(b'R', role);
        match content {
            None => {
                self.hasher.update(&[b'C', 0]);
            }
            Some(Content::Text(text)) => {
                self.hasher.update(&[b'C', 1]);
                self.str(b'c', text);
            }
            Some(Content::Parts(parts)) => {
                self.hasher.update(&[b'C', 2]);
                self.len(b'p', parts.len());
                for part in parts {
                    let ContentPart { kind, text, extra } = part;
                    self.str(b'k', kind);
                    self.opt_str(b'q', text.as_deref());
                    self.json(b'e', extra, &[]);
                }
            }
        }
        self.opt_str(b'N', name.as_deref());
        self.json(b'E', extra, &[]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(Content::Text(text.into())),
            name: None,
            extra: "{}".into(),
        }
    }

    fn base() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![msg("system", "be brief"), msg("user", "hello")],
            temperature: Some(0.0),
            top_p: None,
            max_tokens: Some(10),
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: r#"{"seed":1,"tools":[{"a":1,"b":2}]}"#.into(),
        }
    }

    fn key(r: &ChatRequest) -> CacheKey {
        request_key("demo", None, r)
    }

    #[test]
    fn every_keyed_field_changes_the_key() {
        let k = key(&base());
        type Change = Box<dyn Fn(&mut ChatRequest)>;
        let variants: Vec<Change> = vec![
            Box::new(|r| r.model = "m2".into()),
            Box::new(|r| r.messages[1] = msg("user", "hello!")),
            Box::new(|r| r.messages[1].role = "assistant".into()),
            Box::new(|r| r.messages[1].name = Some("n".into())),
            Box::new(|r| r.messages[1].extra = r#"{"tool_call_id":"x"}"#.into()),
            Box::new(|r| r.messages[1].content = None),
            Box::new(|r| {
                r.messages[1].content = Some(Content::Parts(vec![ContentPart {
                    kind: "text".into(),
                    text: Some("hello".into()),
                    extra: "{}".into(),
                }]))
            }),
            Box::new(|r| r.messages.push(msg("user", ""))),
            Box::new(|r| r.temperature = Some(0.5)),
            Box::new(|r| r.temperature = None),
            Box::new(|r| r.top_p = Some(0.9)),
            Box::new(|r| r.max_tokens = Some(11)),
            Box::new(|r| r.max_tokens = None),
            Box::new(|r| r.extra = r#"{"seed":2,"tools":[{"a":1,"b":2}]}"#.into()),
            Box::new(|r| r.extra = r#"{"seed":1}"#.into()),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut r = base();
            change(&mut r);
            assert_ne!(key(&r), k, "variant {i} did not change the key");
        }
        assert_ne!(request_key("other", None, &base()), k, "route");
        // Prefix-free: moving text across a field boundary is a different request.
        let mut a = base();
        a.messages = vec![msg("system", "ab"), msg("user", "c")];
        let mut b = base();
        b.messages = vec![msg("system", "a"), msg("user", "bc")];
        assert_ne!(key(&a), key(&b));
        assert_ne!(request_key("demo", Some("t1"), &base()), k, "tenant");
    }

    #[test]
    fn excluded_fields_and_key_order_do_not_change_the_key() {
        let k = key(&base());
        let mut r = base();
        r.stream = true;
        r.user = Some("u-42".into());
        r.metadata = vec![("trace".into(), "x".into())];
        r.extra =
            r#"{"tools":[{"b":2,"a":1}],"stream_options":{"include_usage":true},"seed":1}"#.into();
        assert_eq!(key(&r), k);
        r.temperature = Some(-0.0);
        assert_eq!(key(&r), k);
    }

    #[test]
    fn no_collisions_over_100_000_generated_requests() {
        let mut seen = HashSet::with_capacity(100_000);
        for i in 0..100_000u32 {
            let mut r = base();
            // Vary the fields in ways that could collide under a naive concatenation.
            match i % 4 {
                0 => r.messages[1] = msg("user", &format!("{i}")),
                1 => r.messages[0] = msg("system", &format!("be brief{i}")),
                2 => {
                    r.messages[0] = msg("system", &format!("be brief{}", i / 10));
                    r.messages[1] = msg("user", &format!("{}hello", i % 10));
                }
                _ => r.max_tokens = Some(i),
            }
            assert!(seen.insert(key(&r)), "collision at {i}");
        }
    }
}
