//! `[state]`: where state shared by a fleet of nodes lives. `backend = "local"` (the default)
//! keeps everything in this process, as a single node needs; `"redis"` shares budgets, rate
//! limits, the response cache, jobs and spend with every node on the same Redis (or Valkey).
//! The `state` module gives it behaviour.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::Source;
use super::error::ConfigError;
use super::value::{Int, Mib, Ms, Val, choices, env_var, mask, mib, ms, read_str, serde_default};

choices! {
    /// Where shared state lives.
    pub enum Backend {
        /// In this process (a single node). The default.
        Local = "local",
        /// On Redis 7 or Valkey, shared by every node naming the same `url` and `key_prefix`.
        Redis = "redis",
    }
}

choices! {
    /// How a key's budget is enforced across nodes.
    pub enum BudgetMode {
        /// One atomic reservation in Redis before each upstream call and one settle after:
        /// never overspends, one round trip each way. The default.
        Strict = "strict",
        /// A node takes a slice of the remaining budget and spends it locally (for nodes far
        /// from Redis): never overspends, may refuse while other nodes hold slices.
        Lease = "lease",
    }
}

choices! {
    /// What a feature does while Redis cannot be reached (or is too slow).
    pub enum OnUnavailable {
        /// Keep serving on a local share of the fleet limit (limit / `expected_nodes`).
        FailOpen = "fail_open",
        /// Refuse with 503 `state_unavailable`.
        FailClosed = "fail_closed",
    }
}

/// `[state.on_unavailable]`: per feature, what happens while Redis is unavailable. The cache
/// always misses then, and `POST /v1/jobs` always answers 503 (a job cannot be acknowledged
/// durably).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Policies {
    /// Key budgets (default `fail_open`: a local share of each key's remaining budget).
    #[serde(default)]
    pub budgets: OnUnavailable,
    /// Key and target RPM/TPM (default `fail_open`: limit / `expected_nodes` on this node).
    #[serde(default)]
    pub rate_limits: OnUnavailable,
}

serde_default!(Policies);

/// `[state]`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct StateSettings {
    /// `local` or `redis`.
    #[serde(default)]
    pub backend: Backend,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS); required with
    /// `backend = "redis"`. Shown with its password masked.
    #[serde(deserialize_with = "redis_url", serialize_with = "masked_url", default)]
    pub url: Option<String>,
    /// An environment variable holding the password, so the file need not (overrides one in
    /// the URL).
    #[serde(deserialize_with = "env_var", default)]
    pub password_env: Option<String>,
    /// The password read from [`Self::password_env`].
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub password: Option<String>,
    /// Prefix of every key weir writes, so fleets can share one Redis (default `weir`).
    #[serde(deserialize_with = "prefix", default = "weir")]
    pub key_prefix: String,
    /// This node's name in the fleet (spend rows, job claims, leases); default
    /// `hostname:port` of the API listener.
    #[serde(deserialize_with = "node", default)]
    pub node_id: Option<String>,
    /// Bound on connecting (and on authenticating) to Redis.
    #[serde(rename = "connect_timeout_ms", with = "Ms::<1, 60_000>")]
    #[serde(default = "ms::<1000>")]
    pub connect_timeout: Duration,
    /// Deadline of one Redis call on the request path; past it the call counts as failed and
    /// the feature's policy applies. Keep it a few ms over the Redis round trip.
    #[serde(rename = "command_timeout_ms", with = "Ms::<1, 10_000>")]
    #[serde(default = "ms::<25>")]
    pub command_timeout: Duration,
    /// Deadline of one Redis call off the request path (jobs, spend shipping, settles).
    #[serde(rename = "background_timeout_ms", with = "Ms::<1, 60_000>")]
    #[serde(default = "ms::<2000>")]
    pub background_timeout: Duration,
    /// Consecutive failed calls that open the breaker around Redis: while open, no call
    /// waits on Redis.
    #[serde(with = "Int::<1, 1000>", default = "Val::<3>::int")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe (doubling while probes fail, up to
    /// 30 s).
    #[serde(rename = "breaker_open_ms", with = "Ms::<1, 60_000>")]
    #[serde(default = "ms::<1000>")]
    pub breaker_open: Duration,
    /// How many nodes the fleet is expected to have: a node on its own (Redis unavailable)
    /// enforces limit / `expected_nodes` of each fleet-wide limit.
    #[serde(with = "Int::<1, 10_000>", default = "Val::<1>::int")]
    pub expected_nodes: u32,
    /// `strict` or `lease`.
    #[serde(default)]
    pub budget_mode: BudgetMode,
    /// A strict reservation's expiry: a node that dies mid-call has it charged in full then
    /// (corrected if its settle arrives later). Longer than any call with its retries.
    #[serde(rename = "reservation_ttl_ms", with = "Ms::<1000, 86_400_000>")]
    #[serde(default = "ms::<600_000>")]
    pub reservation_ttl: Duration,
    /// How long a lease (a slice of a budget or a rate limit taken by one node) lives before
    /// the node must renew it; what it has not spent goes back to the fleet then.
    #[serde(rename = "lease_ttl_ms", with = "Ms::<100, 3_600_000>")]
    #[serde(default = "ms::<10_000>")]
    pub lease_ttl: Duration,
    /// How long a node holds a lease of rate-limit permits (0: one Redis call per
    /// admission). Leased permits count in the fleet's window from when they are taken to
    /// this long after, so the bound stays exact; unused ones go back at the next lease.
    #[serde(rename = "rate_limit_lease_ms", with = "Ms::<0, 10_000>")]
    #[serde(default = "ms::<0>")]
    pub rate_limit_lease: Duration,
    /// Whether answers are cached in Redis too (a hit on one node for an answer another
    /// fetched) and identical misses on different nodes make one upstream call.
    #[serde(default = "super::value::yes")]
    pub shared_cache: bool,
    /// Largest cache entry (the serialized response with its checksum) stored in or read
    /// from Redis; a larger answer stays in this node's tiers only.
    #[serde(rename = "cache_max_entry_mib", with = "Mib::<1, 64>")]
    #[serde(default = "mib::<1>")]
    pub cache_max_entry_bytes: u64,
    /// Life of the lease a node takes to fetch a missed answer for the fleet (renewed every
    /// third of it while its call runs): a node that dies holding it delays the others by at
    /// most this before one of them takes over.
    #[serde(rename = "cache_flight_lease_ms", with = "Ms::<100, 60_000>")]
    #[serde(default = "ms::<3000>")]
    pub cache_flight_lease: Duration,
    /// Longest a node waits for another node's answer to an identical request (also cut to
    /// the request's deadline); 0 turns coalescing across nodes off (each node still
    /// coalesces its own identical misses).
    #[serde(rename = "cache_flight_wait_ms", with = "Ms::<0, 3_600_000>")]
    #[serde(default = "ms::<30_000>")]
    pub cache_flight_wait: Duration,
    /// What each feature does while Redis is unavailable.
    #[serde(default)]
    pub on_unavailable: Policies,
}

serde_default!(StateSettings);

impl std::fmt::Debug for StateSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::masked::debug(self, "StateSettings", f)
    }
}

fn weir() -> String {
    "weir".to_owned()
}

fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read_str(d, |url| {
        let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
        let host = url.split_once("://").map_or("", |(_, rest)| rest);
        let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
        if !scheme_ok || host.is_empty() || host.starts_with('/') {
            return Err(format!(
                "expected a URL like \"redis://127.0.0.1:6379\" or \"rediss://host:6380/0\", got {:?}",
                mask_password(url)
            ));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("expected a URL without spaces or control characters".to_owned());
        }
        Ok(Some(url.to_owned()))
    })
}

fn masked_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    url.as_deref().map(mask_password).serialize(s)
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:{}@{host}", super::MASK)
        }
        None => url.to_owned(),
    }
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read_str(d, |prefix| {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && (prefix.bytes()).all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        match ok {
            true => Ok(prefix.to_owned()),
            false => Err(format!(
                "expected 1 to 64 characters from `A-Z`, `a-z`, `0-9`, `_`, `-`, `.` and `:`, got {prefix:?}"
            )),
        }
    })
}

fn node<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read_str(d, |node| {
        let ok = !node.is_empty()
            && node.len() <= 128
            && (node.bytes()).all(|b| b.is_ascii_graphic() && !b"{}\"\\".contains(&b));
        match ok {
            true => Ok(Some(node.to_owned())),
            false => Err(format!(
                "expected 1 to 128 visible ASCII characters other than braces, quotes and \
                 backslashes, got {node:?}"
            )),
        }
    })
}

/// The second pass: a Redis backend needs its URL; the password is read from the
/// environment.
pub(crate) fn check(state: &mut StateSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    if state.backend == Backend::Redis {
        let message =
            "expected a Redis URL (like \"redis://127.0.0.1:6379\") with backend = \"redis\"";
        src.ensure(state.url.is_some(), "state.backend", message)?;
    }
    if let Some(var) = &state.password_env {
        let purpose = "the Redis password";
        state.password = Some(src.secret("state.password_env", var, purpose)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn the_password_of_a_url_is_masked() {
        assert_eq!(
            mask_password("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            mask_password("rediss://app:p@ss@host:6380"),
            "rediss://app:***@host:6380"
        );
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
