//! Behind: OpenAI message content → Gemini parts (text, images, function calls and function
//! responses).

use serde_json::{Value, json};

use crate::providers::translate::Untranslatable;

use super::{Object, expect_object, present, required_str};

/// Image types Gemini reads, by file extension, for `https` image URLs (Gemini needs the type).
const IMAGE_EXTENSIONS: [(&str, &str); 6] = [
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("heif", "image/heif"),
];

/// Rejects message fields Gemini cannot carry.
pub(super) fn check_message_fields(
    message: &Object,
    role: &str,
    path: &str,
) -> Result<(), Untranslatable> {
    let allowed: &[&str] = match role {
        "assistant" => &["role", "content", "tool_calls"],
        "tool" => &["role", "content", "tool_call_id", "name"],
        _ => &["role", "content"],
    };
    match message
        .iter()
        .find(|(key, value)| !value.is_null() && !allowed.contains(&key.as_str()))
    {
        Some((key, _)) if key == "name" => Err(Untranslatable::new(
            format!("{path}.name"),
            "Gemini turns carry no participant name",
        )),
        Some((key, _)) => Err(Untranslatable::new(
            format!("{path}.{key}"),
            "Gemini has no equivalent of this message field",
        )),
        None => Ok(()),
    }
}

/// A message's `content` (string, parts or absent) → Gemini parts. Images only where allowed.
pub(super) fn content_parts(
    content: Option<&Value>,
    path: &str,
    images: bool,
) -> Result<Vec<Value>, Untranslatable> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({ "text": text })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_part(part, &format!("{path}[{j}]"), images))
            .collect(),
        Some(_) => Err(Untranslatable::new(
            path,
            "must be a string, an array of content parts or null",
        )),
    }
}

/// One OpenAI content part → one Gemini part.
fn content_part(part: &Value, path: &str, images: bool) -> Result<Value, Untranslatable> {
    let part = expect_object(part, path)?;
    match part.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({ "text": required_str(part, "text", path)? })),
        Some("image_url") if images => image_part(part, path),
        Some("image_url") => Err(Untranslatable::new(
            path,
            "Gemini takes images in user messages only",
        )),
        _ => Err(Untranslatable::new(
            path,
            "Gemini takes text and image_url content parts only",
        )),
    }
}

/// An `image_url` part → `inlineData` (data URL) or `fileData` (https URL).
fn image_part(part: &Object, path: &str) -> Result<Value, Untranslatable> {
    let image_path = format!("{path}.image_url");
    let image = expect_object(part.get("image_url").unwrap_or(&Value::Null), &image_path)?;
    let url_path = format!("{image_path}.url");
    let url = required_str(image, "url", &image_path)?;
    if let Some(rest) = url.strip_prefix("data:") {
        return inline_data(rest, &url_path);
    }
    if url.starts_with("https://") {
        let mime = mime_from_extension(url).ok_or_else(|| {
            Untranslatable::new(
                &url_path,
                "Gemini needs the image's type, and the URL does not end in .png, .jpg, .jpeg, \
                 .webp, .heic or .heif",
            )
        })?;
        return Ok(json!({ "fileData": { "mimeType": mime, "fileUri": url } }));
    }
    Err(Untranslatable::new(
        url_path,
        "must be an https URL or a base64 data URL",
    ))
}

/// The part of a data URL after `data:` → `inlineData`.
fn inline_data(rest: &str, path: &str) -> Result<Value, Untranslatable> {
    let bad = || Untranslatable::new(path, "a data URL must be `data:<MIME type>;base64,<data>`");
    let (header, data) = rest.split_once(',').ok_or_else(bad)?;
    let mime = header.strip_suffix(";base64").ok_or_else(bad)?;
    let mime = mime.split(';').next().unwrap_or(mime);
    if !mime.starts_with("image/") {
        return Err(Untranslatable::new(
            path,
            "an image_url data URL must hold an image (data:image/...)",
        ));
    }
    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

/// The image MIME type a URL's file extension names, if Gemini reads it.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = name.rsplit_once('.')?;
    IMAGE_EXTENSIONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map(|(_, mime)| *mime)
}

/// One OpenAI tool call → (id, name, `functionCall` part).
pub(super) fn function_call_part(
    call: &Value,
    path: &str,
) -> Result<(String, String, Value), Untranslatable> {
    let call = expect_object(call, path)?;
    if let Some(kind) = present(call, "type")
        && kind.as_str() != Some("function")
    {
        return Err(Untranslatable::new(
            format!("{path}.type"),
            "Gemini takes function calls only",
        ));
    }
    let id = required_str(call, "id", path)?;
    let function_path = format!("{path}.function");
    let function = expect_object(call.get("function").unwrap_or(&Value::Null), &function_path)?;
    let name = required_str(function, "name", &function_path)?;
    let arguments = required_str(function, "arguments", &function_path)?;
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(arguments) else {
        return Err(Untranslatable::new(
            format!("{function_path}.arguments"),
            "must be a JSON object: Gemini takes function arguments as an object",
        ));
    };
    let part = json!({ "functionCall": { "id": id, "name": name, "args": args } });
    Ok((id.to_string(), name.to_string(), part))
}

/// A tool message's content as one text.
pub(super) fn content_text(content: Option<&Value>, path: &str) -> Result<String, Untranslatable> {
    let parts = content_parts(content, path, false)?;
    Ok(parts
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect())
}

/// A tool result → `functionResponse.response`: a JSON object as is, anything else wrapped as
/// `{"content": text}`. An object that itself is exactly `{"content": "<string>"}` is wrapped
/// too (as its text), so that the way back can tell the two apart.
pub(super) fn response_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) if !is_content_wrapper(&object) => Value::Object(object),
        _ => json!({ "content": text }),
    }
}

/// `{"content": "<string>"}` and nothing else.
fn is_content_wrapper(object: &Object) -> bool {
    object.len() == 1 && object.get("content").is_some_and(Value::is_string)
}
