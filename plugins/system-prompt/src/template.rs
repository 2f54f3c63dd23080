//! `{{name}}` substitution in the prompt template.
//!
//! A placeholder is `{{`, optional whitespace, a name made of ASCII letters, digits, `_`, `.`
//! and `-`, optional whitespace, and `}}`: `{{user_name}}`, `{{ route }}`. Anything else is
//! copied as it is, so a lone `{{`, `{{ two words }}` or `{{}}` stays literal text; there is
//! no escape syntax because none is needed for text that is not a placeholder. Substituted
//! values are inserted verbatim and never scanned again, so a value that itself contains
//! `{{...}}` cannot pull in other variables. One pass, linear in the template.

/// Longest text between `{{` and `}}` considered as a placeholder (name and whitespace).
const MAX_INNER: usize = 128;

/// Renders `template`: each placeholder becomes `lookup(name)`, or `fallback` when that is
/// `None`. With no fallback, the first name not found is the error.
pub fn render<'a>(
    template: &str,
    mut lookup: impl FnMut(&str) -> Option<&'a str>,
    fallback: Option<&str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(offset) = template[from..].find("{{") {
        let open = from + offset;
        let Some((name, close)) = placeholder_at(template, open) else {
            from = open + 1;
            continue;
        };
        let value = match lookup(name) {
            Some(value) => value,
            None => fallback.ok_or_else(|| name.to_string())?,
        };
        out.push_str(&template[copied..open]);
        out.push_str(value);
        copied = close;
        from = close;
    }
    out.push_str(&template[copied..]);
    Ok(out)
}

/// The name of the placeholder whose `{{` is at `open`, and the end of its `}}`.
fn placeholder_at(template: &str, open: usize) -> Option<(&str, usize)> {
    let inner_start = open + 2;
    let mut window_end = (inner_start + MAX_INNER + 2).min(template.len());
    while !template.is_char_boundary(window_end) {
        window_end -= 1;
    }
    let window = &template[inner_start..window_end];
    let close = window.find("}}")?;
    let name = window[..close].trim();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    valid.then_some((name, inner_start + close + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "user" => Some("Ada"),
            "route" => Some("support"),
            "tricky" => Some("{{user}}"),
            "empty" => Some(""),
            _ => None,
        }
    }

    fn render_with(template: &str, fallback: Option<&str>) -> Result<String, String> {
        render(template, vars, fallback)
    }

    #[test]
    fn substitutes_with_and_without_spaces() {
        assert_eq!(
            render_with("Hi {{user}} on {{ route }} / {{\troute\n}}.", None),
            Ok("Hi Ada on support / support.".to_string())
        );
        assert_eq!(
            render_with("{{user}}{{user}}", None),
            Ok("AdaAda".to_string())
        );
        assert_eq!(render_with("[{{empty}}]", None), Ok("[]".to_string()));
    }

    #[test]
    fn missing_names_use_the_fallback_or_fail() {
        assert_eq!(
            render_with("Hi {{nobody}}!", Some("")),
            Ok("Hi !".to_string())
        );
        assert_eq!(
            render_with("Hi {{ nobody }}!", Some("friend")),
            Ok("Hi friend!".to_string())
        );
        assert_eq!(
            render_with("Hi {{user}} and {{nobody}}", None),
            Err("nobody".to_string())
        );
    }

    #[test]
    fn values_are_not_rescanned() {
        assert_eq!(
            render_with("x {{tricky}} y", None),
            Ok("x {{user}} y".to_string())
        );
    }

    #[test]
    fn non_placeholders_stay_literal() {
        for template in [
            "no braces",
            "a lone {{ brace",
            "{{}}",
            "{{ }}",
            "{{ two words }}",
            "{{user!}}",
            "{user}",
            "}} {{",
            "json: {\"a\": {\"b\": 1}}",
        ] {
            assert_eq!(
                render_with(template, None),
                Ok(template.to_string()),
                "{template}"
            );
        }
    }

    #[test]
    fn nested_and_tripled_braces() {
        // The first `{{` has no valid name before `}}`; the inner one does.
        assert_eq!(
            render_with("{{ {{user}} }}", None),
            Ok("{{ Ada }}".to_string())
        );
        assert_eq!(render_with("{{{user}}}", None), Ok("{Ada}".to_string()));
    }

    #[test]
    fn names_may_use_dots_and_dashes() {
        let lookup = |name: &str| (name == "tenant.plan-tier").then_some("gold");
        assert_eq!(
            render("plan: {{tenant.plan-tier}}", lookup, None),
            Ok("plan: gold".to_string())
        );
    }

    #[test]
    fn long_inner_text_is_not_a_placeholder() {
        let long = format!("{{{{{}}}}}", "a".repeat(MAX_INNER + 1));
        assert_eq!(render_with(&long, Some("x")), Ok(long.clone()));
        let ok = format!("{{{{{}}}}}", "a".repeat(MAX_INNER));
        assert_eq!(render_with(&ok, Some("x")), Ok("x".to_string()));
    }

    #[test]
    fn non_ascii_text_is_kept() {
        assert_eq!(
            render_with("Grüß {{user}} — ✓ {{ é }}", Some("?")),
            Ok("Grüß Ada — ✓ {{ é }}".to_string())
        );
        // A window boundary inside a multi-byte character does not panic.
        let text = format!("{{{{{}}}", "é".repeat(MAX_INNER));
        assert_eq!(render_with(&text, Some("?")), Ok(text.clone()));
    }
}
