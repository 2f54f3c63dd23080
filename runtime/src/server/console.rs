//! The operator's console: a static page (HTML, CSS, plain JavaScript) embedded in the binary
//! and served on the admin listener behind the admin API's own checks (`Host`, token). It
//! reads only the admin API, with `fetch`: no build step, no CDN, no websockets.
//!
//! The assets are `include_str!`ed from `console/`, so what is served is what is in the
//! repository (there is no generated output to keep current).

use http::{HeaderValue, Response, header};

use super::http_util::{self, Body};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Content-Security-Policy of the console: its own scripts and styles only (inline `style`
/// attributes size the bars), fetches to its own origin, and it may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// The asset at `path`, if the console has one.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (body, kind) = match path {
        "/" | "/console" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(http_util::full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_are_served_with_their_types_and_a_strict_policy() {
        let page = asset("/").expect("index");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or("")
                .contains("script-src 'self'")
        );
        assert_eq!(
            asset("/console.js").expect("script").headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(asset("/etc/passwd").is_none());
        // The page links exactly the assets served, and nothing from elsewhere.
        assert!(INDEX.contains("src=\"/console.js\"") && INDEX.contains("href=\"/console.css\""));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
    }
}
