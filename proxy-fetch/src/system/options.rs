//! Options of a proxied fetch and the retry policy, as plain data that travels with the job.

use serde::{Deserialize, Serialize};

/// Defaults match the TypeScript design's: 30 s timeout, `FETCH_EXECUTOR`,
/// `FETCH_ORCHESTRATOR`, instance `singleton`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyFetchOptions {
    /// Per attempt: time allowed for the response and its whole body.
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    /// Larger response bodies are refused with `FetchErrorKind::Rejected`. RPC carries at most
    /// 32 MiB per call, so the default leaves room for the rest of the message.
    pub max_body_bytes: u64,
    /// If set, only these hosts (exact, or `*.example.com` for subdomains) may be fetched.
    pub allowed_hosts: Option<Vec<String>>,
    /// Service binding of the `FetchExecutorEntrypoint`, as seen by the orchestrator.
    pub executor_binding: String,
    /// Durable Object binding of the `FetchOrchestrator`.
    pub orchestrator_binding: String,
    /// Name of the orchestrator instance (with shards: the prefix of each shard's name).
    pub orchestrator_instance: String,
    /// Number of orchestrator instances requests are spread over by a stable hash of their id.
    pub shards: u32,
    /// Durable Object binding of the origin, so results can find their way back. When `None`,
    /// the binding is inferred from the origin's type name (`WeatherDo` -> `WEATHER_DO`).
    pub origin_binding: Option<String>,
    /// How long after the last possible attempt the orchestrator waits for a result before
    /// delivering `FetchErrorKind::Backstop`.
    pub backstop_grace_ms: u64,
}

impl Default for ProxyFetchOptions {
    fn default() -> Self {
        ProxyFetchOptions {
            timeout_ms: 30_000,
            retry: RetryPolicy::default(),
            max_body_bytes: 24 * 1024 * 1024,
            allowed_hosts: None,
            executor_binding: "FETCH_EXECUTOR".into(),
            orchestrator_binding: "FETCH_ORCHESTRATOR".into(),
            orchestrator_instance: "singleton".into(),
            shards: 1,
            origin_binding: None,
            backstop_grace_ms: 10_000,
        }
    }
}

impl ProxyFetchOptions {
    /// Longest time the executor can legitimately take: every attempt timing out, plus every
    /// backoff at its cap.
    pub fn worst_case_ms(&self) -> u64 {
        let attempts = self.retry.max_attempts.max(1) as u64;
        self.timeout_ms * attempts + self.retry.max_delay_ms * (attempts - 1)
    }

    /// When the orchestrator gives up waiting for a result.
    pub fn backstop_after_ms(&self) -> u64 {
        self.worst_case_ms() + self.backstop_grace_ms
    }

    /// The orchestrator instance that owns `request_id`.
    pub fn shard_for(&self, request_id: &str) -> String {
        if self.shards <= 1 {
            return self.orchestrator_instance.clone();
        }
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let hash = request_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        format!(
            "{}-{}",
            self.orchestrator_instance,
            hash % self.shards as u64
        )
    }

    /// Whether `host` passes `allowed_hosts`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        let host = host.to_ascii_lowercase();
        allowed.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == pattern,
            }
        })
    }
}

/// When and how often the executor tries again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Retry requests with non-idempotent methods (POST, PATCH) too. Off by default: the
    /// upstream may have acted on the first attempt.
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 200,
            max_delay_ms: 5_000,
            retry_non_idempotent: false,
        }
    }
}

/// What an attempt ended with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt {
    Status {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    NetworkError,
    Timeout,
    /// A policy refused it (body over `max_body_bytes`, redirect off `allowed_hosts`):
    /// another attempt would meet the same answer.
    Refused,
}

impl RetryPolicy {
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// After attempt number `attempt` (1-based) ended as `outcome`: `Some(delay)` to try again
    /// after `delay` ms, `None` to deliver it. `jitter` in [0, 1) spreads retries of many
    /// requests apart ("full jitter": a uniform delay up to the exponential step).
    pub fn next_delay(
        &self,
        attempt: u32,
        outcome: Attempt,
        idempotent: bool,
        jitter: f64,
    ) -> Option<u64> {
        if attempt >= self.max_attempts || !(idempotent || self.retry_non_idempotent) {
            return None;
        }
        let backoff = || {
            let step = self
                .base_delay_ms
                .saturating_mul(1u64 << (attempt - 1).min(30));
            (step.min(self.max_delay_ms) as f64 * jitter.clamp(0.0, 1.0)) as u64
        };
        match outcome {
            Attempt::NetworkError => Some(backoff()),
            Attempt::Status {
                status: 502..=504, ..
            } => Some(backoff()),
            Attempt::Status {
                status: 429,
                retry_after_ms,
            } => Some(
                retry_after_ms
                    .unwrap_or_else(backoff)
                    .min(self.max_delay_ms),
            ),
            // A timeout already cost a whole timeout; another attempt would double the wait
            // the origin asked for. Statuses other than the above are answers, 4xx above all.
            Attempt::Timeout | Attempt::Refused | Attempt::Status { .. } => None,
        }
    }
}

/// Parses `Retry-After` (delay-seconds or an HTTP date) into milliseconds from `now_ms`.
pub fn parse_retry_after(value: &str, now_ms: f64) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let date = js_date_parse(value)?;
    Some((date - now_ms).max(0.0) as u64)
}

#[cfg(target_arch = "wasm32")]
fn js_date_parse(value: &str) -> Option<f64> {
    let ms = js_sys::Date::parse(value);
    (!ms.is_nan()).then_some(ms)
}

#[cfg(not(target_arch = "wasm32"))]
fn js_date_parse(_value: &str) -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: bool = true;
    const POST: bool = false;

    #[test]
    fn retries_network_errors_and_gateway_statuses_with_growing_backoff() {
        let p = RetryPolicy {
            max_attempts: 4,
            base_delay_ms: 100,
            max_delay_ms: 250,
            retry_non_idempotent: false,
        };
        assert_eq!(p.next_delay(1, Attempt::NetworkError, GET, 1.0), Some(100));
        assert_eq!(
            p.next_delay(
                2,
                Attempt::Status {
                    status: 503,
                    retry_after_ms: None
                },
                GET,
                1.0
            ),
            Some(200)
        );
        assert_eq!(
            p.next_delay(
                3,
                Attempt::Status {
                    status: 502,
                    retry_after_ms: None
                },
                GET,
                1.0
            ),
            Some(250)
        );
        assert_eq!(
            p.next_delay(4, Attempt::NetworkError, GET, 1.0),
            None,
            "attempts exhausted"
        );
        assert_eq!(
            p.next_delay(1, Attempt::NetworkError, GET, 0.5),
            Some(50),
            "jitter scales the step"
        );
    }

    #[test]
    fn never_retries_4xx_timeouts_or_non_idempotent_methods() {
        let p = RetryPolicy::default();
        for status in [400, 401, 404, 409, 422, 500, 501] {
            assert_eq!(
                p.next_delay(
                    1,
                    Attempt::Status {
                        status,
                        retry_after_ms: None
                    },
                    GET,
                    1.0
                ),
                None,
                "{status}"
            );
        }
        assert_eq!(p.next_delay(1, Attempt::Timeout, GET, 1.0), None);
        assert_eq!(p.next_delay(1, Attempt::NetworkError, POST, 1.0), None);
        let p = RetryPolicy {
            retry_non_idempotent: true,
            ..p
        };
        assert!(p.next_delay(1, Attempt::NetworkError, POST, 1.0).is_some());
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        let p = RetryPolicy {
            max_delay_ms: 2_000,
            ..RetryPolicy::default()
        };
        let after = |ms| Attempt::Status {
            status: 429,
            retry_after_ms: Some(ms),
        };
        assert_eq!(p.next_delay(1, after(1_000), GET, 0.0), Some(1_000));
        assert_eq!(p.next_delay(1, after(60_000), GET, 0.0), Some(2_000));
        assert_eq!(parse_retry_after(" 3 ", 0.0), Some(3_000));
        assert_eq!(parse_retry_after("soon", 0.0), None);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let o = ProxyFetchOptions {
            shards: 4,
            ..Default::default()
        };
        assert_eq!(o.shard_for("abc"), o.shard_for("abc"));
        let used: std::collections::BTreeSet<_> =
            (0..100).map(|i| o.shard_for(&format!("req-{i}"))).collect();
        assert_eq!(used.len(), 4, "{used:?}");
        assert_eq!(ProxyFetchOptions::default().shard_for("x"), "singleton");
    }

    #[test]
    fn allow_list_matches_hosts_and_subdomains() {
        let o = ProxyFetchOptions {
            allowed_hosts: Some(vec!["api.example.com".into(), "*.svc.test".into()]),
            ..Default::default()
        };
        assert!(o.host_allowed("API.example.com"));
        assert!(o.host_allowed("a.svc.test"));
        assert!(!o.host_allowed("svc.test"));
        assert!(!o.host_allowed("example.com"));
        assert!(ProxyFetchOptions::default().host_allowed("anything"));
    }

    #[test]
    fn the_backstop_waits_for_every_attempt() {
        let o = ProxyFetchOptions {
            timeout_ms: 1_000,
            backstop_grace_ms: 500,
            ..Default::default()
        };
        assert_eq!(o.backstop_after_ms(), 3 * 1_000 + 2 * 5_000 + 500);
    }
}
