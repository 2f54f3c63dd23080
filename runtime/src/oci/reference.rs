//! `oci://REGISTRY/REPOSITORY@sha256:DIGEST` (or `:TAG`): a stage artifact in a registry.
//!
//! Stricter than Docker's image references on purpose: the registry is always written (no
//! implicit `docker.io`, so a typo cannot send a pull to Docker Hub), the repository follows
//! the OCI distribution spec's grammar, and the only digest algorithm is sha256 (what every
//! registry and `wkg` produce).

use std::fmt;

/// The scheme a stage `path` starts with to name an OCI artifact.
pub const SCHEME: &str = "oci://";

/// Longest reference accepted, in bytes (the distribution spec caps a repository name at 255
/// characters in practice; a registry, a tag and a digest add well under 512).
const MAX_LEN: usize = 1024;

/// A parsed `oci://` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host`, `host:port` or `[ipv6]:port`, as written.
    pub registry: String,
    /// `path/to/repo`: lowercase components joined by `/`.
    pub repository: String,
    /// The tag, when one is written (informational when a digest is written too).
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>`: the manifest's digest, when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text`, which must start with `oci://`. The error says what is wrong, without
    /// the reference (the caller names it).
    pub fn parse(text: &str) -> Result<Reference, String> {
        if text.len() > MAX_LEN {
            return Err(format!(
                "expected a reference of at most {MAX_LEN} bytes, got {}",
                text.len()
            ));
        }
        let Some(rest) = text.strip_prefix(SCHEME) else {
            return Err(format!("expected a reference starting with `{SCHEME}`"));
        };
        let shape = "expected oci://REGISTRY/REPOSITORY@sha256:DIGEST (or :TAG)";
        let Some((registry, rest)) = rest.split_once('/') else {
            return Err(format!("{shape}: no repository after the registry"));
        };
        check_registry(registry)?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
            None => (rest, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port is already gone).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].find(':') {
            Some(colon) => {
                let at = last_slash + colon;
                (&rest[..at], Some(check_tag(&rest[at + 1..])?))
            }
            None => (rest, None),
        };
        check_repository(repository)?;
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "{shape}: no digest or tag; pin the artifact with @sha256:… (`weir push` prints it)"
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The same artifact pinned to `digest` (a tag resolved).
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// oci-client's form of it: by digest when pinned, else by tag.
    pub fn to_client(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (None, Some(tag)) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                "latest".to_owned(),
            ),
        }
    }

    /// True when the registry is on this host (`localhost`, `127.0.0.0/8`, `[::1]`): the
    /// only registries reached over plain HTTP without being listed as insecure.
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// True when `registry` (`host[:port]`) is this host.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host`, `host:port` or `[ipv6]:port`.
pub fn check_registry(registry: &str) -> Result<(), String> {
    if registry.contains("://") {
        return Err(format!(
            "expected a registry as host or host:port, without a scheme, got {registry:?}"
        ));
    }
    let (host, port) = match registry.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                (ip, rest.strip_prefix(':'))
            }
            _ => return Err(format!("expected a registry host, got {registry:?}")),
        },
        None => match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        },
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.contains(':')
            || host
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(is_host_byte)));
    if !host_ok {
        return Err(format!(
            "expected a registry host (like ghcr.io or 127.0.0.1:5000), got {registry:?}"
        ));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "expected a port from 1 to 65535 after the registry host, got {port:?}"
        ));
    }
    Ok(())
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// The distribution spec's `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        !bytes.is_empty()
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains("._")
            && !c.contains("_.")
            && !c.contains(".-")
            && !c.contains("-.")
    };
    if repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "expected a repository of lowercase letters, digits and `.`, `_`, `-` separators \
             between `/`-separated parts (like weir/stages/pii-redact), got {repository:?}"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> Result<String, String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match ok {
        true => Ok(tag.to_owned()),
        false => Err(format!(
            "expected a tag of letters, digits, `_`, `.` and `-` (at most 128), got {tag:?}"
        )),
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<String, String> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        format!("expected a digest of the form sha256:<64 hex digits>, got {digest:?}")
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "expected 64 lowercase hex digits after sha256:, got {hex:?}"
        ));
    }
    Ok(digest.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_and_tagged_references_parse() {
        let r = Reference::parse(&format!("oci://127.0.0.1:5000/weir/pii@{DIGEST}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "weir/pii");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        assert!(r.is_loopback());
        assert_eq!(
            r.to_string(),
            format!("oci://127.0.0.1:5000/weir/pii@{DIGEST}")
        );

        let r = Reference::parse("oci://ghcr.io/acme/stages/guard:v1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "acme/stages/guard")
        );
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert!(!r.is_loopback());

        let r = Reference::parse(&format!("oci://[::1]:5000/a/b:t@{DIGEST}")).unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        assert!(r.is_loopback());
        assert_eq!(r.tag.as_deref(), Some("t"));
        let client = r.to_client();
        assert_eq!(client.digest(), Some(DIGEST));
        assert_eq!(client.repository(), "a/b");
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (text, expected) in [
            ("ghcr.io/a/b:v1", "starting with `oci://`"),
            ("oci://ghcr.io", "no repository"),
            ("oci://ghcr.io/a/b", "no digest or tag"),
            ("oci:///a/b:v1", "registry host"),
            ("oci://ghcr.io:0/a/b:v1", "port"),
            ("oci://ghcr.io:x/a/b:v1", "port"),
            ("oci://gh cr.io/a/b:v1", "registry host"),
            ("oci://ghcr.io/A/b:v1", "repository"),
            ("oci://ghcr.io/a//b:v1", "repository"),
            ("oci://ghcr.io/a/b-:v1", "repository"),
            ("oci://ghcr.io/a/b:", "tag"),
            ("oci://ghcr.io/a/b:-x", "tag"),
            ("oci://ghcr.io/a/b@sha256:abc", "64 lowercase hex"),
            ("oci://ghcr.io/a/b@sha512:abc", "sha256:<64 hex digits>"),
            (
                "oci://ghcr.io/a/b@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                "64 lowercase hex",
            ),
        ] {
            let err = Reference::parse(text).err().unwrap_or_default();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let long = format!("oci://ghcr.io/{}:v1", "a".repeat(2000));
        assert!(Reference::parse(&long).is_err());
    }

    #[test]
    fn only_this_host_is_loopback() {
        for registry in [
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(is_loopback(registry), "{registry}");
        }
        for registry in [
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(registry), "{registry}");
        }
    }
}
