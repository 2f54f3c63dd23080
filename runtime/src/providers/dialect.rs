//! Where a target's requests go and how they are signed, by the wire format it speaks: the
//! URL of a chat or embeddings call and the header carrying the API key. What the bodies
//! look like is the translation modules' business ([`super::anthropic`], [`super::gemini`]).

use http::header::{HeaderName, HeaderValue};

use crate::config::{ANTHROPIC_VERSION, AZURE_API_VERSION, ProviderKind, TargetSettings};

/// The beta header Anthropic's structured outputs (`output_format`) need.
const ANTHROPIC_STRUCTURED_OUTPUTS: &str = "structured-outputs-2025-11-13";

/// A target's wire format, with what its URLs and headers need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI-compatible: `{base}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// Azure OpenAI: `{base}/openai/deployments/{deployment}/...?api-version=`, `api-key`.
    Azure {
        /// The deployment the URL names.
        deployment: String,
        /// The `api-version` query parameter.
        api_version: String,
    },
    /// Anthropic Messages: `{base}/messages`, `x-api-key`, `anthropic-version`.
    Anthropic {
        /// The `anthropic-version` header.
        version: HeaderValue,
    },
    /// Gemini: `{base}/models/{model}:generateContent`, `x-goog-api-key`.
    Gemini,
}

impl Dialect {
    /// The dialect a validated target speaks. Its strings were checked by the config
    /// (`deployment` and `api_version` are URL-safe tokens), so nothing here fails.
    pub fn of(target: &TargetSettings) -> Dialect {
        let version = target.api_version.as_deref();
        match target.kind {
            ProviderKind::OpenAi => Dialect::OpenAi,
            ProviderKind::AzureOpenAi => Dialect::Azure {
                deployment: target.deployment.clone().unwrap_or_default(),
                api_version: version.unwrap_or(AZURE_API_VERSION).to_owned(),
            },
            ProviderKind::Anthropic => Dialect::Anthropic {
                version: HeaderValue::from_str(version.unwrap_or(ANTHROPIC_VERSION))
                    .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION)),
            },
            ProviderKind::Gemini => Dialect::Gemini,
        }
    }

    /// The `kind` the config wrote.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Dialect::OpenAi => ProviderKind::OpenAi,
            Dialect::Azure { .. } => ProviderKind::AzureOpenAi,
            Dialect::Anthropic { .. } => ProviderKind::Anthropic,
            Dialect::Gemini => ProviderKind::Gemini,
        }
    }

    /// The URL of a chat call for `model` under `base`, streamed or not.
    pub fn chat_url(&self, base: &str, model: &str, stream: bool) -> String {
        match self {
            Dialect::OpenAi => format!("{base}/chat/completions"),
            Dialect::Azure {
                deployment,
                api_version,
            } => format!(
                "{base}/openai/deployments/{deployment}/chat/completions?api-version={api_version}"
            ),
            Dialect::Anthropic { .. } => format!("{base}/messages"),
            Dialect::Gemini if stream => {
                format!(
                    "{base}/models/{}:streamGenerateContent?alt=sse",
                    path_segment(model)
                )
            }
            Dialect::Gemini => format!("{base}/models/{}:generateContent", path_segment(model)),
        }
    }

    /// The URL of an OpenAI-shaped embeddings call; `None` for a dialect without one (the
    /// config keeps embedding calls off such targets).
    pub fn embeddings_url(&self, base: &str) -> Option<String> {
        match self {
            Dialect::OpenAi => Some(format!("{base}/embeddings")),
            Dialect::Azure {
                deployment,
                api_version,
            } => Some(format!(
                "{base}/openai/deployments/{deployment}/embeddings?api-version={api_version}"
            )),
            Dialect::Anthropic { .. } | Dialect::Gemini => None,
        }
    }

    /// The headers that carry `key` (when the target has one) and the dialect's own: built
    /// once per target, sent with every request.
    pub fn signing(&self, key: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(2);
        let name = HeaderName::from_static(self.kind().key_header());
        if let Some(key) = key {
            let value = match self {
                Dialect::OpenAi => HeaderValue::from_str(&format!("Bearer {key}")),
                _ => HeaderValue::from_str(key),
            };
            // The key was read from the environment and checked as a header value at load.
            if let Ok(mut value) = value {
                value.set_sensitive(true);
                headers.push((name, value));
            }
        }
        if let Dialect::Anthropic { version } = self {
            headers.push((
                HeaderName::from_static("anthropic-version"),
                version.clone(),
            ));
        }
        headers
    }

    /// A header one request's `body` needs: Anthropic's beta flag for `output_format`.
    pub fn body_header(&self, body: &[u8]) -> Option<(HeaderName, HeaderValue)> {
        let wanted = matches!(self, Dialect::Anthropic { .. })
            && body
                .windows(b"\"output_format\"".len())
                .any(|w| w == b"\"output_format\"");
        wanted.then(|| {
            (
                HeaderName::from_static("anthropic-beta"),
                HeaderValue::from_static(ANTHROPIC_STRUCTURED_OUTPUTS),
            )
        })
    }
}

/// `model` made safe as one URL path segment (a client's model name is untrusted: no `/`,
/// `?`, `#` or `%` may change which URL is called).
fn path_segment(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_has_its_own_url_layout() {
        let base = "http://h/v1";
        assert_eq!(
            Dialect::OpenAi.chat_url(base, "m", false),
            "http://h/v1/chat/completions"
        );
        let azure = Dialect::Azure {
            deployment: "prod-4o".into(),
            api_version: "2024-10-21".into(),
        };
        assert_eq!(
            azure.chat_url("https://r.openai.azure.com", "gpt-4o", true),
            "https://r.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            azure.embeddings_url("https://r").as_deref(),
            Some("https://r/openai/deployments/prod-4o/embeddings?api-version=2024-10-21")
        );
        let anthropic = Dialect::Anthropic {
            version: HeaderValue::from_static(ANTHROPIC_VERSION),
        };
        assert_eq!(anthropic.chat_url(base, "c", true), "http://h/v1/messages");
        assert_eq!(anthropic.embeddings_url(base), None);
        assert_eq!(
            Dialect::Gemini.chat_url(base, "gemini-2.5-flash", false),
            "http://h/v1/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            Dialect::Gemini.chat_url(base, "gemini-2.5-flash", true),
            "http://h/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn a_clients_model_cannot_change_a_gemini_url() {
        assert_eq!(
            Dialect::Gemini.chat_url("http://h", "../x?key=1#f", false),
            "http://h/models/..%2Fx%3Fkey%3D1%23f:generateContent"
        );
    }

    #[test]
    fn each_dialect_signs_with_its_own_header() {
        let names = |d: &Dialect| {
            d.signing(Some("k"))
                .into_iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&Dialect::OpenAi), ["authorization=Bearer k"]);
        let azure = Dialect::Azure {
            deployment: "d".into(),
            api_version: "v".into(),
        };
        assert_eq!(names(&azure), ["api-key=k"]);
        assert_eq!(names(&Dialect::Gemini), ["x-goog-api-key=k"]);
        let anthropic = Dialect::Anthropic {
            version: HeaderValue::from_static(ANTHROPIC_VERSION),
        };
        assert_eq!(
            names(&anthropic),
            ["x-api-key=k", "anthropic-version=2023-06-01"]
        );
        let beta = anthropic.body_header(br#"{"output_format":{}}"#);
        assert_eq!(
            beta.map(|(n, _)| n.to_string()).as_deref(),
            Some("anthropic-beta")
        );
        assert_eq!(anthropic.body_header(b"{}"), None);
        assert_eq!(
            Dialect::OpenAi.body_header(br#"{"output_format":{}}"#),
            None
        );
        assert!(Dialect::OpenAi.signing(None).is_empty());
    }
}
