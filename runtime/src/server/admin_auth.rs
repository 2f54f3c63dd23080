//! Who may use the admin listener: the `Host` check (against DNS rebinding) and the bearer
//! token (compared in constant time), run before any admin route.
//!
//! A browser page can rebind a name it controls to 127.0.0.1 and then read `/admin/config`
//! or POST `/admin/reload` from the victim's machine as its own origin; the browser still
//! sends the attacker's name in `Host`. So an admin request is answered only when its `Host`
//! (and the authority of an absolute-form request target) names the machine itself:
//! `localhost`, a loopback address, the address the client connected to, or a name listed in
//! `server.admin_allowed_hosts`; the port is ignored.
//!
//! A page of another site can also send a simple request (a form POST, or `fetch` with
//! `text/plain`) straight to `http://127.0.0.1:9901/admin/reload`: `Host` is right, and the
//! browser sends it without asking (no preflight), only without reading the answer (third
//! probe, B4). Browsers say whose page sent it (`Origin`), so a request whose `Origin` names
//! another host is refused the same way; tools send none, and the console at `/` is the
//! listener's own origin.

use std::net::SocketAddr;

use http::Request;

use crate::config::{HostName, ServerSettings};
use crate::openai::ApiError;

/// The sockets of one admin connection.
#[derive(Clone, Copy, Debug)]
pub struct Socket {
    /// The address the admin listener is bound to.
    pub listener: SocketAddr,
    /// The address the client connected to (differs from `listener` when it is bound to
    /// `0.0.0.0` or `[::]`).
    pub local: SocketAddr,
}

/// Checks `Host`, then the admin token; the refusal as an OpenAI-shaped error.
pub fn check<B>(
    server: &ServerSettings,
    request: &Request<B>,
    socket: Socket,
) -> Result<(), ApiError> {
    check_host(server, request, socket)?;
    check_origin(server, request, socket)?;
    check_token(server, request, socket)
}

fn check_origin<B>(
    server: &ServerSettings,
    request: &Request<B>,
    socket: Socket,
) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    // `scheme://host[:port]`; `null` (a sandboxed or local page) names no host.
    let host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if !allowed(server, socket, HostName::from_authority(host).as_ref()) {
        return Err(forbidden(&format!(
            "the admin API does not answer requests sent by pages of another site (Origin \
             {origin:?})"
        )));
    }
    Ok(())
}

fn check_host<B>(
    server: &ServerSettings,
    request: &Request<B>,
    socket: Socket,
) -> Result<(), ApiError> {
    let header = request
        .headers()
        .get(http::header::HOST)
        .map(|value| value.to_str().ok());
    let authority = request.uri().authority().map(|a| a.as_str());
    let named = match (header, authority) {
        (None, None) => return Err(forbidden("an admin request needs a `Host` header")),
        (Some(header), authority) => [header, authority.or(header)],
        (None, Some(authority)) => [Some(authority); 2],
    };
    for host in named {
        let host = host.unwrap_or("");
        if !allowed(server, socket, HostName::from_authority(host).as_ref()) {
            return Err(forbidden(&format!(
                "the admin API does not answer to the host {host:?}: it answers to localhost, \
                 loopback addresses, its own address and `server.admin_allowed_hosts`"
            )));
        }
    }
    Ok(())
}

fn allowed(server: &ServerSettings, socket: Socket, host: Option<&HostName>) -> bool {
    let Some(host) = host else {
        return false;
    };
    if host.is_loopback() || server.admin_allowed_hosts.contains(host) {
        return true;
    }
    matches!(host, HostName::Ip(ip)
        if ip.to_canonical() == socket.local.ip().to_canonical()
            || (!socket.listener.ip().is_unspecified() && *ip == socket.listener.ip()))
}

fn check_token<B>(
    server: &ServerSettings,
    request: &Request<B>,
    socket: Socket,
) -> Result<(), ApiError> {
    let Some(token) = &server.admin_token else {
        // Refused at start-up and in every config (see `config::server`); a reload cannot
        // drop the token of a listener that `--admin-listen` put on a public address either.
        if !socket.listener.ip().is_loopback() {
            return Err(ApiError::new(
                401,
                "authentication_error",
                "admin_token_required",
                "this admin listener is not on a loopback address and no admin token is \
                 configured (`server.admin_token_env`)",
            ));
        }
        return Ok(());
    };
    let given = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::chat::bearer_token)
        .unwrap_or("");
    // `blake3::Hash` equality is constant-time: how much of a guess matches does not show in
    // the response time.
    if blake3::hash(given.as_bytes()) != blake3::hash(token.as_bytes()) {
        return Err(ApiError::new(
            401,
            "authentication_error",
            "invalid_admin_token",
            "the admin API needs `Authorization: Bearer <admin token>`",
        ));
    }
    Ok(())
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(403, "permission_error", "host_not_allowed", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(listener: &str, local: &str) -> Socket {
        Socket {
            listener: listener.parse().unwrap(),
            local: local.parse().unwrap(),
        }
    }

    fn request(host: Option<&str>, uri: &str, token: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(()).unwrap()
    }

    fn code(result: Result<(), ApiError>) -> Option<(u16, String)> {
        result.err().map(|e| (e.status, e.code))
    }

    #[test]
    fn only_hosts_that_name_this_machine_pass() {
        let server = ServerSettings {
            admin_allowed_hosts: vec![HostName::Name("weir.internal".to_owned())],
            ..ServerSettings::default()
        };
        let loopback = socket("127.0.0.1:9901", "127.0.0.1:9901");
        for host in [
            "localhost",
            "localhost:9901",
            "127.0.0.1:9901",
            "127.0.0.2",
            "[::1]:9901",
            "WEIR.internal:80",
        ] {
            let req = request(Some(host), "/admin/config", None);
            assert_eq!(code(check(&server, &req, loopback)), None, "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9901",
            "10.0.0.9",
            "::1",
            "",
            "weir",
        ] {
            let req = request(Some(host), "/admin/config", None);
            assert_eq!(
                code(check(&server, &req, loopback)),
                Some((403, "host_not_allowed".to_owned())),
                "{host}"
            );
        }
        let req = request(None, "/admin/config", None);
        assert_eq!(
            code(check(&server, &req, loopback)),
            Some((403, "host_not_allowed".to_owned()))
        );
        // An absolute-form target names the host too.
        let req = request(Some("localhost"), "http://evil.example/admin/config", None);
        assert_eq!(
            code(check(&server, &req, loopback)),
            Some((403, "host_not_allowed".to_owned()))
        );
    }

    #[test]
    fn a_request_from_a_page_of_another_site_is_refused() {
        let server = ServerSettings::default();
        let loopback = socket("127.0.0.1:9901", "127.0.0.1:9901");
        let with_origin = |origin: &str| {
            Request::builder()
                .uri("/admin/reload")
                .header("host", "127.0.0.1:9901")
                .header("origin", origin)
                .body(())
                .unwrap()
        };
        for origin in [
            "http://127.0.0.1:9901",
            "http://localhost:9901",
            "http://[::1]:9901",
        ] {
            let req = with_origin(origin);
            assert_eq!(code(check(&server, &req, loopback)), None, "{origin}");
        }
        for origin in [
            "http://evil.example",
            "https://evil.example:9901",
            "null",
            "",
        ] {
            let req = with_origin(origin);
            assert_eq!(
                code(check(&server, &req, loopback)),
                Some((403, "host_not_allowed".to_owned())),
                "{origin}"
            );
        }
    }

    #[test]
    fn the_listeners_own_address_passes() {
        let server = ServerSettings {
            admin_token: Some("t".to_owned()),
            ..ServerSettings::default()
        };
        let bound = socket("10.0.0.5:9901", "10.0.0.5:9901");
        let any = socket("0.0.0.0:9901", "192.168.1.7:9901");
        for (socket, host) in [(bound, "10.0.0.5:9901"), (any, "192.168.1.7")] {
            let req = request(Some(host), "/admin/config", Some("t"));
            assert_eq!(code(check(&server, &req, socket)), None, "{host}");
        }
        let req = request(Some("0.0.0.0"), "/admin/config", Some("t"));
        assert!(code(check(&server, &req, any)).is_some());
    }

    #[test]
    fn the_token_must_match_and_a_public_listener_needs_one() {
        let server = ServerSettings {
            admin_token: Some("s3cret".to_owned()),
            ..ServerSettings::default()
        };
        let loopback = socket("127.0.0.1:9901", "127.0.0.1:9901");
        let denied = Some((401, "invalid_admin_token".to_owned()));
        for token in [None, Some("s3cre"), Some("s3cret2"), Some("")] {
            let req = request(Some("localhost"), "/admin/config", token);
            assert_eq!(code(check(&server, &req, loopback)), denied, "{token:?}");
        }
        let req = request(Some("localhost"), "/admin/config", Some("s3cret"));
        assert_eq!(code(check(&server, &req, loopback)), None);

        let open = ServerSettings::default();
        let public = socket("0.0.0.0:9901", "127.0.0.1:9901");
        let req = request(Some("localhost"), "/admin/config", None);
        assert_eq!(
            code(check(&open, &req, public)),
            Some((401, "admin_token_required".to_owned()))
        );
        assert_eq!(code(check(&open, &req, loopback)), None);
    }
}
