//! A compiled JSON schema ([`jsonschema`]) and the list of what a value breaks in it.
//!
//! Schemas are compiled as draft 2020-12 unless they name another draft in `$schema` (4, 6,
//! 7, 2019-09, 2020-12), and checked against that draft's metaschema; `format` is an
//! annotation in 2019-09 and later (the drafts' default). Nothing outside the schema is ever
//! loaded: a `$ref` to another document fails compilation, so a schema from a client cannot
//! make the stage read a file or reach the network.

use jsonschema::Validator;
use serde_json::Value;

/// A schema ready to validate values.
pub struct Schema {
    /// The compiled schema.
    validator: Validator,
}

/// One thing a value breaks: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The JSON pointer of the offending value (`/items/0/age`; empty for the whole value).
    pub at: String,
    /// What is wrong, in the validator's words (`"x" is not of type "integer"`).
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.at.is_empty() {
            "(root)"
        } else {
            &self.at
        };
        write!(f, "{at}: {}", self.message)
    }
}

impl Schema {
    /// Compiles `schema`; the error says why it is not a valid schema.
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        // Built with default features off, the crate resolves no `http(s)` or `file` reference
        // (the test below holds it to that). `options().offline()` says the same explicitly
        // but adds 1.5 MB to the component (a second instance of the compiler).
        let validator = jsonschema::validator_for(schema).map_err(|err| {
            match err.instance_path().to_string() {
                at if at.is_empty() => err.to_string(),
                at => format!("{at}: {err}"),
            }
        })?;
        Ok(Schema { validator })
    }

    /// Every violation of `value`, in the validator's order (empty when `value` matches).
    pub fn violations(&self, value: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(value)
            .map(|err| Violation {
                at: err.instance_path().to_string(),
                message: err.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compile(schema: Value) -> Schema {
        match Schema::compile(&schema) {
            Ok(schema) => schema,
            Err(err) => panic!("{schema} does not compile: {err}"),
        }
    }

    fn person() -> Schema {
        compile(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": false,
        }))
    }

    fn rendered(schema: &Schema, value: Value) -> Vec<String> {
        schema
            .violations(&value)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_matching_value_has_no_violations() {
        assert!(
            person()
                .violations(&json!({"name": "Ada", "age": 36}))
                .is_empty()
        );
        assert!(compile(json!(true)).violations(&json!([1, "x"])).is_empty());
    }

    #[test]
    fn each_violation_names_its_place() {
        assert_eq!(
            rendered(&person(), json!({"name": "Ada", "age": "x"})),
            [r#"/age: "x" is not of type "integer""#]
        );
        assert_eq!(
            rendered(&person(), json!({"name": "Ada"})),
            [r#"(root): "age" is a required property"#]
        );
        assert_eq!(
            rendered(&person(), json!([1])),
            [r#"(root): [1] is not of type "object""#]
        );
        let many = rendered(&person(), json!({"name": 1, "age": 2.5, "extra": true}));
        assert_eq!(many.len(), 3, "{many:?}");
        assert!(compile(json!(false)).violations(&json!(1)).len() == 1);
    }

    #[test]
    fn other_drafts_by_their_schema_url() {
        let draft7 = compile(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
        }));
        assert_eq!(draft7.violations(&json!({"n": 0})).len(), 1);
        assert!(draft7.violations(&json!({"n": 1})).is_empty());
    }

    #[test]
    fn invalid_schemas_do_not_compile() {
        for bad in [
            json!({"type": "integr"}),
            json!({"required": "name"}),
            json!({"minimum": "3"}),
            json!({"pattern": "("}),
        ] {
            assert!(Schema::compile(&bad).is_err(), "{bad} compiled");
        }
    }

    #[test]
    fn nothing_outside_the_schema_is_loaded() {
        for reference in [
            "https://example.com/schema.json",
            "file:///etc/passwd",
            "other.json",
        ] {
            let err = Schema::compile(&json!({"$ref": reference}))
                .err()
                .unwrap_or_default();
            assert!(!err.is_empty(), "{reference} compiled");
        }
        let local = compile(json!({
            "$defs": {"id": {"type": "integer"}},
            "properties": {"id": {"$ref": "#/$defs/id"}},
        }));
        assert_eq!(local.violations(&json!({"id": "7"})).len(), 1);
    }
}
