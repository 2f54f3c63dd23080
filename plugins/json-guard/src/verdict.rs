//! Judging an answer's text against an [`Expectation`], and the words of a refusal: the
//! `reason` the client and the log see when the retries run out, and the `feedback` the
//! model gets with its retry.
//!
//! Both are bounded so a wildly wrong answer cannot produce a wild message: at most
//! [`MAX_LISTED`] violations, each cut to [`MAX_VIOLATION_CHARS`] characters, and the schema
//! is quoted to the model only when it is at most [`MAX_QUOTED_SCHEMA`] bytes.

use serde_json::Value;

use crate::expect::{Expectation, Origin};
use crate::schema::Schema;

/// Most violations listed in a reason; the rest are counted ("and 3 more").
pub const MAX_LISTED: usize = 5;
/// Longest text of one violation (or of a JSON parse error), characters.
pub const MAX_VIOLATION_CHARS: usize = 200;
/// Largest schema quoted in the feedback, bytes of compact JSON (the host keeps 16 KiB of
/// feedback); a larger one is referred to, not quoted.
pub const MAX_QUOTED_SCHEMA: usize = 8 << 10;

/// What to do with an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is what was asked for.
    Pass,
    /// It is not: ask the model again.
    Retry {
        /// Why, for the log and the client's final error.
        reason: String,
        /// What the model is told.
        feedback: String,
    },
}

/// An expectation with its schema compiled, ready to judge answers.
pub enum Check {
    /// A JSON object.
    JsonObject,
    /// JSON matching a schema.
    Schema {
        /// The compiled schema.
        compiled: Schema,
        /// The schema as given, for the feedback.
        source: Value,
        /// Where it came from.
        origin: Origin,
    },
}

impl Check {
    /// Compiles the schema of `expectation`; the error says why it is not a valid schema.
    pub fn new(expectation: Expectation) -> Result<Check, String> {
        match expectation {
            Expectation::JsonObject => Ok(Check::JsonObject),
            Expectation::Schema { schema, origin } => Ok(Check::Schema {
                compiled: Schema::compile(&schema)?,
                source: schema,
                origin,
            }),
        }
    }

    /// Judges the answer `text`.
    pub fn judge(&self, text: &str) -> Verdict {
        let value = match serde_json::from_str::<Value>(text) {
            Ok(value) => value,
            Err(err) => {
                let problem = format!("output is not JSON: {}", cut(&err.to_string()));
                return self.retry(problem);
            }
        };
        match self {
            Check::JsonObject if value.is_object() => Verdict::Pass,
            Check::JsonObject => self.retry(format!(
                "output is not a JSON object (it is {})",
                kind(&value)
            )),
            Check::Schema {
                compiled, origin, ..
            } => {
                let violations = compiled.violations(&value);
                if violations.is_empty() {
                    return Verdict::Pass;
                }
                let listed: Vec<String> = violations
                    .iter()
                    .take(MAX_LISTED)
                    .map(|v| cut(&v.to_string()))
                    .collect();
                let mut problem = format!(
                    "output does not match {}: {}",
                    origin.describe(),
                    listed.join("; ")
                );
                if violations.len() > MAX_LISTED {
                    problem.push_str(&format!("; and {} more", violations.len() - MAX_LISTED));
                }
                self.retry(problem)
            }
        }
    }

    /// A retry whose reason is `problem`, with feedback saying what to answer instead.
    fn retry(&self, problem: String) -> Verdict {
        let wanted = match self {
            Check::JsonObject => "only a JSON object".to_string(),
            Check::Schema { source, .. } => {
                let quoted = source.to_string();
                if quoted.len() <= MAX_QUOTED_SCHEMA {
                    format!("only a JSON value that matches this JSON schema: {quoted}")
                } else {
                    "only a JSON value that matches the JSON schema you were given".to_string()
                }
            }
        };
        let feedback = format!(
            "Your previous answer was rejected: {problem}. Answer again with {wanted}. Write \
             nothing else: no explanation and no Markdown code fence."
        );
        Verdict::Retry {
            reason: problem,
            feedback,
        }
    }
}

/// `text` cut to [`MAX_VIOLATION_CHARS`] characters, with `…` when cut.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_VIOLATION_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// "an array", "a string", ...: what a JSON value is, for a reason.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema_check(schema: Value, origin: Origin) -> Check {
        match Check::new(Expectation::Schema { schema, origin }) {
            Ok(check) => check,
            Err(err) => panic!("the schema does not compile: {err}"),
        }
    }

    fn person() -> Check {
        schema_check(
            json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
            }),
            Origin::ResponseFormat,
        )
    }

    fn retry(verdict: Verdict) -> (String, String) {
        match verdict {
            Verdict::Retry { reason, feedback } => (reason, feedback),
            Verdict::Pass => panic!("expected a retry, got a pass"),
        }
    }

    #[test]
    fn a_valid_answer_passes() {
        assert_eq!(
            person().judge(r#"{"name": "Ada", "age": 36}"#),
            Verdict::Pass
        );
        assert_eq!(
            person().judge(" \n{\"name\":\"Ada\",\"age\":1}\n"),
            Verdict::Pass
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_place() {
        let (reason, feedback) = retry(person().judge(r#"{"name": "Ada", "age": "x"}"#));
        assert_eq!(
            reason,
            "output does not match the response_format schema: /age: \"x\" is not of type \"integer\""
        );
        assert!(feedback.starts_with(&format!("Your previous answer was rejected: {reason}. ")));
        assert!(
            feedback.contains(r#"matches this JSON schema: {"properties":"#),
            "{feedback}"
        );
        assert!(feedback.ends_with("no Markdown code fence."), "{feedback}");
    }

    #[test]
    fn a_missing_property_is_named() {
        let (reason, _) = retry(person().judge(r#"{"name": "Ada"}"#));
        assert_eq!(
            reason,
            "output does not match the response_format schema: (root): \"age\" is a required property"
        );
    }

    #[test]
    fn text_that_is_not_json() {
        for text in ["Sure! Here is the JSON: {}", "", "```json\n{}\n```"] {
            let (reason, _) = retry(person().judge(text));
            assert!(reason.starts_with("output is not JSON: "), "{reason}");
        }
        let (reason, _) = retry(person().judge("hello"));
        assert_eq!(
            reason,
            "output is not JSON: expected value at line 1 column 1"
        );
    }

    #[test]
    fn json_object_wants_an_object_and_nothing_more() {
        let check = Check::JsonObject;
        assert_eq!(check.judge(r#"{"anything": [1, 2]}"#), Verdict::Pass);
        let (reason, feedback) = retry(check.judge("[1, 2]"));
        assert_eq!(reason, "output is not a JSON object (it is an array)");
        assert!(
            feedback.contains("Answer again with only a JSON object."),
            "{feedback}"
        );
        let (reason, _) = retry(check.judge("not json"));
        assert!(reason.starts_with("output is not JSON: "), "{reason}");
    }

    #[test]
    fn the_configured_schema_is_named_as_such() {
        let check = schema_check(json!({"type": "array"}), Origin::Config);
        let (reason, _) = retry(check.judge("{}"));
        assert_eq!(
            reason,
            "output does not match the configured schema: (root): {} is not of type \"array\""
        );
    }

    #[test]
    fn reasons_are_bounded() {
        let properties: serde_json::Map<String, Value> = (0..8)
            .map(|i| (format!("p{i}"), json!({"type": "integer"})))
            .collect();
        let check = schema_check(
            json!({"type": "object", "properties": properties}),
            Origin::ResponseFormat,
        );
        let answer: serde_json::Map<String, Value> =
            (0..8).map(|i| (format!("p{i}"), json!("x"))).collect();
        let (reason, _) = retry(check.judge(&Value::Object(answer).to_string()));
        assert_eq!(
            reason.matches("is not of type").count(),
            MAX_LISTED,
            "{reason}"
        );
        assert!(reason.ends_with("; and 3 more"), "{reason}");

        let long_name = "n".repeat(500);
        let check = schema_check(
            json!({"type": "object", "required": [long_name]}),
            Origin::ResponseFormat,
        );
        let (reason, _) = retry(check.judge("{}"));
        let listed =
            reason.trim_start_matches("output does not match the response_format schema: ");
        assert_eq!(listed.chars().count(), MAX_VIOLATION_CHARS + 1, "{listed}");
        assert!(listed.ends_with('…'));
    }

    #[test]
    fn a_huge_schema_is_referred_to_not_quoted() {
        let properties: serde_json::Map<String, Value> = (0..2000)
            .map(|i| (format!("property_{i}"), json!({"type": "string"})))
            .collect();
        let check = schema_check(
            json!({"type": "object", "properties": properties}),
            Origin::ResponseFormat,
        );
        let (_, feedback) = retry(check.judge("[]"));
        assert!(
            feedback.contains("the JSON schema you were given"),
            "{feedback}"
        );
        assert!(feedback.len() < 1024, "{}", feedback.len());
    }

    #[test]
    fn an_invalid_schema_does_not_make_a_check() {
        let bad = Expectation::Schema {
            schema: json!({"type": 12}),
            origin: Origin::ResponseFormat,
        };
        assert!(Check::new(bad).is_err());
    }
}
