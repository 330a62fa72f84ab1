//! The executor's own policy: which URLs it fetches, read from the executor worker's
//! configuration (the `PROXY_FETCH_ALLOW` var), never from the job. A job only narrows it
//! (`ProxyFetchOptions::allowed_hosts`).
//!
//! `PROXY_FETCH_ALLOW` is a comma- or space-separated list of `[scheme://]host[:port]` entries:
//! - `scheme` is `https` (the default) or `http`;
//! - `host` is a name, an IP address, or `*.domain` for the subdomains of `domain`;
//! - `port` is a number or `*`; without it only the scheme's default port (443, 80).
//!
//! `*` alone allows every http and https URL on any port. Without the var the executor
//! fetches nothing: every job is refused with a message that says how to set it.

use worker::Url;

use super::options::{host_matches, LONG_FETCH_BUDGET_MS, MAX_ATTEMPTS, MAX_BODY_LIMIT};
use super::ProxyFetchOptions;

/// The name of the var that holds the executor's policy.
pub const POLICY_VAR: &str = "PROXY_FETCH_ALLOW";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    Default,
    Any,
    Is(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: String,
    host: String,
    port: Port,
}

/// What the executor may fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorPolicy {
    any: bool,
    rules: Vec<Rule>,
}

/// The most the executor gives one job, whatever the job asks: its own caps, from its
/// worker's vars (each optional; the default is the most any start may ask for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorLimits {
    /// `PROXY_FETCH_MAX_BODY_BYTES`: response bodies above it are `Rejected` (default and
    /// at most [`MAX_BODY_LIMIT`]).
    pub max_body_bytes: u64,
    /// `PROXY_FETCH_MAX_ATTEMPTS`: attempts per job, retries included (default and at most 10).
    pub max_attempts: u32,
    /// `PROXY_FETCH_MAX_TIMEOUT_MS`: per attempt (default and at most [`LONG_FETCH_BUDGET_MS`];
    /// on the short path every attempt also ends within the `waitUntil` budget).
    pub max_timeout_ms: u64,
    /// `PROXY_FETCH_MAX_INFLIGHT_BYTES`: the bytes of bodies (requests of the jobs running,
    /// and their responses once read) one executor isolate holds at most before it answers
    /// new calls [`BUSY`](super::protocol::BUSY) (default 64 MiB, at most 1 GiB).
    /// A call is always taken when nothing is in flight.
    pub max_inflight_bytes: u64,
}

/// The default of `PROXY_FETCH_MAX_INFLIGHT_BYTES`: 64 MiB, half of an isolate's 128 MB.
pub const INFLIGHT_BYTES: u64 = 64 * 1024 * 1024;
const MAX_INFLIGHT_BYTES: u64 = 1024 * 1024 * 1024;

impl Default for ExecutorLimits {
    fn default() -> Self {
        ExecutorLimits {
            max_body_bytes: MAX_BODY_LIMIT,
            max_attempts: MAX_ATTEMPTS,
            max_timeout_ms: LONG_FETCH_BUDGET_MS,
            max_inflight_bytes: INFLIGHT_BYTES,
        }
    }
}

impl ExecutorLimits {
    /// The limits in `env`'s vars; a var that is not a number within its range is an error
    /// naming it (the executor then refuses every job, saying why).
    pub fn from_env(env: &worker::Env) -> Result<ExecutorLimits, String> {
        let cap = |name: &str, max: u64| -> Result<u64, String> {
            let Ok(value) = env.var(name) else {
                return Ok(if name == "PROXY_FETCH_MAX_INFLIGHT_BYTES" {
                    INFLIGHT_BYTES
                } else {
                    max
                });
            };
            let value = value.to_string();
            match value.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "the executor's `{name}` is `{value}`: a number from 1 to {max}"
                )),
            }
        };
        let defaults = ExecutorLimits::default();
        Ok(ExecutorLimits {
            max_body_bytes: cap("PROXY_FETCH_MAX_BODY_BYTES", defaults.max_body_bytes)?,
            max_attempts: cap("PROXY_FETCH_MAX_ATTEMPTS", defaults.max_attempts as u64)? as u32,
            max_timeout_ms: cap("PROXY_FETCH_MAX_TIMEOUT_MS", defaults.max_timeout_ms)?,
            max_inflight_bytes: cap("PROXY_FETCH_MAX_INFLIGHT_BYTES", MAX_INFLIGHT_BYTES)?,
        })
    }

    /// `options` with size, attempts and time held to these limits.
    pub fn clamp(&self, options: &mut ProxyFetchOptions) {
        options.max_body_bytes = options.max_body_bytes.min(self.max_body_bytes);
        options.retry.max_attempts = options.retry.max_attempts.min(self.max_attempts);
        options.timeout_ms = options.timeout_ms.min(self.max_timeout_ms);
    }
}

impl ExecutorPolicy {
    /// The policy of the executor's worker, from its [`POLICY_VAR`] var; an error that says
    /// how to set it when the var is missing or unreadable.
    pub fn from_env(env: &worker::Env) -> Result<ExecutorPolicy, String> {
        match env.var(POLICY_VAR) {
            Ok(spec) => ExecutorPolicy::parse(&spec.to_string()),
            Err(_) => Err(format!(
                "the executor's worker has no `{POLICY_VAR}` var, so it fetches nothing: set it \
                 to the hosts it may fetch, e.g. `api.example.com, *.example.org` (`*` allows any)"
            )),
        }
    }
}

impl ExecutorPolicy {
    /// Parses the var's value; an entry that cannot be read is an error naming it (the
    /// executor then refuses every job, saying why).
    pub fn parse(spec: &str) -> Result<ExecutorPolicy, String> {
        let mut policy = ExecutorPolicy {
            any: false,
            rules: Vec::new(),
        };
        for entry in spec.split([',', ' ', '\n', '\t']).filter(|e| !e.is_empty()) {
            if entry == "*" {
                policy.any = true;
                continue;
            }
            policy.rules.push(parse_rule(entry).ok_or_else(|| {
                format!("{POLICY_VAR}: `{entry}` is not `[http(s)://]host[:port|:*]`")
            })?);
        }
        Ok(policy)
    }

    /// Whether every http(s) URL is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Checks exactly the URL that will be fetched.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "scheme `{scheme}` is not fetched (only http and https)"
            ));
        }
        if self.any {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        let allowed = self.rules.iter().any(|r| {
            r.scheme == scheme
                && host_matches(&r.host, host)
                && match r.port {
                    Port::Any => true,
                    Port::Is(p) => p == port,
                    Port::Default => Some(port) == default_port(scheme),
                }
        });
        if allowed {
            Ok(())
        } else {
            // The entry that would allow it, written the shortest way the var reads it.
            let entry = match (scheme, Some(port) == default_port(scheme)) {
                ("https", true) => host.to_owned(),
                (_, true) => format!("{scheme}://{host}"),
                _ => format!("{scheme}://{host}:{port}"),
            };
            Err(format!(
                "`{scheme}://{host}:{port}` is not allowed by the executor's {POLICY_VAR}: add \
                 `{entry}` to it (an entry without a scheme is https only, and without a port the \
                 scheme's default port only)"
            ))
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

fn parse_rule(entry: &str) -> Option<Rule> {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("https".to_owned(), entry),
    };
    if !matches!(scheme.as_str(), "http" | "https") {
        return None;
    }
    // A port follows the last colon, unless the host is a bracketed IPv6 address.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port = match port {
                "*" => Port::Any,
                p => Port::Is(p.parse().ok()?),
            };
            (host, port)
        }
        _ => (rest, Port::Default),
    };
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let valid = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    valid.then(|| Rule {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, url: &str) -> bool {
        let url = Url::parse(url).expect("test URL");
        ExecutorPolicy::parse(spec)
            .expect("test policy")
            .check(&url)
            .is_ok()
    }

    #[test]
    fn entries_name_scheme_host_and_port() {
        let spec = "api.example.com, http://127.0.0.1:*, https://*.svc.test:8443";
        assert!(check(spec, "https://api.example.com/x"));
        assert!(
            !check(spec, "http://api.example.com/x"),
            "https is the default scheme"
        );
        assert!(
            !check(spec, "https://api.example.com:8443/"),
            "only the default port"
        );
        assert!(check(spec, "http://127.0.0.1:9999/"));
        assert!(!check(spec, "https://127.0.0.1/"));
        assert!(check(spec, "https://a.svc.test:8443/"));
        assert!(!check(spec, "https://svc.test:8443/"));
        assert!(!check(spec, "https://evil.test/"));
    }

    #[test]
    fn star_allows_http_and_https_only_and_empty_allows_nothing() {
        assert!(check("*", "http://anything:1234/"));
        assert!(!check("*", "ftp://anything/"));
        assert!(!check("", "https://api.example.com/"));
    }

    #[test]
    fn unreadable_entries_are_errors() {
        assert!(ExecutorPolicy::parse("ftp://x").is_err());
        assert!(ExecutorPolicy::parse("x:notaport").is_err());
        assert!(ExecutorPolicy::parse("a/b").is_err());
    }
}
