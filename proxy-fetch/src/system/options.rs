//! Options of a proxied fetch and the retry policy, as plain data that travels with the job,
//! checked by [`ProxyFetchOptions::validate`] before anything starts.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::strict::strict_serde;

strict_serde!(ProxyFetchOptions, RetryPolicy);

/// The longest one executor invocation may work after acknowledging: production cancels
/// `waitUntil` work 30 s after the call returned, so everything (attempts, backoff, delivery)
/// must fit in less.
pub const INVOCATION_BUDGET_MS: u64 = 28_000;
/// Of that budget, what the delivery to the origin (and its retries) keeps for itself.
pub const DELIVERY_RESERVE_MS: u64 = 3_000;
/// Time the fetch attempts of one invocation may use in all.
pub const FETCH_BUDGET_MS: u64 = INVOCATION_BUDGET_MS - DELIVERY_RESERVE_MS;
/// One RPC call carries at most 32 MiB; a response body must leave room for the rest of the
/// delivery (headers, ids).
pub const MAX_BODY_LIMIT: u64 = 31 * 1024 * 1024;

/// The long path's fetch budget: what the attempts of one queue consumer invocation may use
/// in all (13 minutes: with [`LONG_DELIVERY_RESERVE_MS`], well under the consumer's 15-minute
/// wall clock). Also the largest `timeout_ms` a request may ask for.
pub const LONG_FETCH_BUDGET_MS: u64 = 780_000;
/// On the long path, what the delivery to the origin (and its retries) keeps for itself: five
/// tries with 1.5 s of backoff in all, and the calls themselves. The origin's backstop waits
/// for it after a claimed fetch's worst case, so it is no larger than it needs to be.
pub const LONG_DELIVERY_RESERVE_MS: u64 = 15_000;

/// The most attempts (the first and its retries) a request may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// Which way a request travels.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// origin -> executor -> origin. The origin's own alarm is the backstop. Fewest billed
    /// operations: one Durable Object request and one or two row writes per request (README,
    /// "Costs").
    #[default]
    Direct,
    /// origin -> `FetchOrchestrator` (a Durable Object queue) -> executor -> origin, and the
    /// orchestrator is told the request is done. The queue is observable in one place
    /// (`stats`) and keeps the backstop; costs two more Durable Object requests and one or two
    /// more row writes per request (fewer for requests started together).
    Orchestrated,
}

/// Which host fetches a request: the executor under `waitUntil` (every attempt within
/// [`FETCH_BUDGET_MS`]) or the queue consumer (within [`LONG_FETCH_BUDGET_MS`]).
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchPath {
    /// The long path when `timeout_ms` is above [`FETCH_BUDGET_MS`] (what the `waitUntil`
    /// window can honour), the short path otherwise.
    #[default]
    Auto,
    /// Always the executor (`waitUntil`); a `timeout_ms` above [`FETCH_BUDGET_MS`] is refused.
    Short,
    /// Always the queue consumer (needs the queue binding [`ProxyFetchOptions::queue_binding`]).
    Long,
}

/// What keeps a request until its result comes.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A record in the origin's storage, and its alarm as the backstop: the result reaches the
    /// handler (or the handler learns why not) whatever crashes. About one row written per
    /// request.
    #[default]
    Recorded,
    /// Only the origin's memory holds the request: no row written, no alarm set, only the
    /// delivery call is billed. If the origin's instance is gone before the result comes (a
    /// crash, a reset, an eviction from memory, a deploy), the result is dropped with a log line
    /// and no handler runs; a result is never delivered twice, nor one without its token.
    /// Direct flow, short path only.
    LostOnCrash,
}

/// Defaults: direct flow, 25 s per attempt within a 25 s fetch budget, 3 attempts, 24 MiB
/// bodies, `FETCH_EXECUTOR`, `FETCH_ORCHESTRATOR`, instance `singleton`.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[proxy_fetch_macros::__serde_remote_self] // strict_serde!, unseen by ts-rs (strict.rs)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyFetchOptions {
    /// Which way the request travels (default [`Flow::Direct`]).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<Flow>", optional)
    )]
    pub flow: Flow,
    /// What keeps the request until its result comes (default [`Durability::Recorded`]).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<Durability>", optional)
    )]
    pub durability: Durability,
    /// Per attempt: time allowed for the response and its whole body (1 ..= 780 000). All
    /// attempts of a request share their path's budget ([`FETCH_BUDGET_MS`] on the short path,
    /// [`LONG_FETCH_BUDGET_MS`] on the long one): a retry starts only if time is left. Above
    /// [`FETCH_BUDGET_MS`], [`FetchPath::Auto`] takes the long path.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub timeout_ms: u64,
    /// When the executor tries again (default: 3 attempts, idempotent methods only; see
    /// [`RetryPolicy`]).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<RetryPolicy>", optional)
    )]
    pub retry: RetryPolicy,
    /// Larger response bodies are refused with `FetchErrorKind::Rejected` (at most
    /// [`MAX_BODY_LIMIT`], what one RPC delivery can carry).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub max_body_bytes: u64,
    /// If set, only these hosts (exact, or `*.example.com` for subdomains) may be fetched. The
    /// executor's own policy (`PROXY_FETCH_ALLOW`) applies in any case; this narrows it.
    #[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), ts(optional = nullable))]
    pub allowed_hosts: Option<Vec<String>>,
    /// Service binding of the `FetchExecutorEntrypoint`.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<String>", optional)
    )]
    pub executor_binding: String,
    /// Durable Object binding of the `FetchOrchestrator` (orchestrated flow).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<String>", optional)
    )]
    pub orchestrator_binding: String,
    /// Name of the orchestrator instance (with shards: the prefix of each shard's name).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<String>", optional)
    )]
    pub orchestrator_instance: String,
    /// Number of orchestrator instances requests are spread over by a stable hash of their id.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u32>", optional)
    )]
    pub shards: u32,
    /// Durable Object binding of the origin, so results can find their way back. When `None`,
    /// the binding is inferred from the origin's type name (`WeatherDo` -> `WEATHER_DO`).
    #[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), ts(optional = nullable))]
    pub origin_binding: Option<String>,
    /// How long after the executor's budget the backstop waits for a result before acting.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub backstop_grace_ms: u64,
    /// The request's whole life: until then a lost idempotent request is dispatched again and
    /// an undeliverable result retried; after it the handler gets a final error.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub max_age_ms: u64,
    /// Which host fetches the request (default [`FetchPath::Auto`]: the long path exactly when
    /// `timeout_ms` is above [`FETCH_BUDGET_MS`]).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<FetchPath>", optional)
    )]
    pub path: FetchPath,
    /// Queue producer binding of the long path (`[[queues.producers]]`); the worker that
    /// consumes that queue names it in its `PROXY_FETCH_QUEUE` var.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<String>", optional)
    )]
    pub queue_binding: String,
    /// Long path: how long a job may wait in the queue before the origin's backstop counts it
    /// lost (added to the backstop's time).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub queue_wait_ms: u64,
    /// The request's id, chosen by the caller: starting a request whose id is still pending
    /// starts nothing and returns that id (idempotent starts). When `None`, proxy-fetch names
    /// the request: `<random>~<n>`, the `n`th of the requests started alongside it.
    #[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), ts(optional = nullable))]
    pub request_id: Option<String>,
}

impl Default for ProxyFetchOptions {
    fn default() -> Self {
        ProxyFetchOptions {
            flow: Flow::default(),
            durability: Durability::default(),
            timeout_ms: FETCH_BUDGET_MS,
            retry: RetryPolicy::default(),
            max_body_bytes: 24 * 1024 * 1024,
            allowed_hosts: None,
            executor_binding: "FETCH_EXECUTOR".into(),
            orchestrator_binding: "FETCH_ORCHESTRATOR".into(),
            orchestrator_instance: "singleton".into(),
            shards: 1,
            origin_binding: None,
            backstop_grace_ms: 10_000,
            max_age_ms: 10 * 60_000,
            request_id: None,
            path: FetchPath::Auto,
            queue_binding: "PROXY_FETCH_LONG".into(),
            queue_wait_ms: 60_000,
        }
    }
}

/// What one host's invocation may spend: on fetching (attempts and backoff) and, after that,
/// on delivering the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The attempts of a job end within this many ms of the invocation's start.
    pub fetch_ms: u64,
    /// What the delivery keeps for itself after the fetch budget.
    pub delivery_ms: u64,
}

impl Budget {
    /// The executor, under `ctx.waitUntil` (production ends it 30 s after the call returned).
    pub const WAIT_UNTIL: Budget = Budget {
        fetch_ms: FETCH_BUDGET_MS,
        delivery_ms: DELIVERY_RESERVE_MS,
    };
    /// The long path's queue consumer (production: 15 minutes of wall clock per invocation).
    pub const QUEUE: Budget = Budget {
        fetch_ms: LONG_FETCH_BUDGET_MS,
        delivery_ms: LONG_DELIVERY_RESERVE_MS,
    };

    /// The whole invocation: fetch and delivery.
    pub fn total_ms(&self) -> u64 {
        self.fetch_ms + self.delivery_ms
    }
}

/// An option out of range: its name, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidOption {
    /// The option's name, as a path for nested ones (`retry.max_attempts`).
    pub option: String,
    /// What is wrong: the value and the range or form it must have.
    pub message: String,
}

impl fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option `{}`: {}", self.option, self.message)
    }
}

fn within(option: &str, value: u64, min: u64, max: u64) -> Result<(), InvalidOption> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidOption {
            option: option.into(),
            message: format!("{value} is outside {min} ..= {max}"),
        })
    }
}

fn name(option: &str, value: &str) -> Result<(), InvalidOption> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InvalidOption {
            option: option.into(),
            message: format!("`{value}` must be 1 to 128 characters of A-Z a-z 0-9 _ - . :"),
        })
    }
}

impl ProxyFetchOptions {
    /// Checks every value: `proxy_fetch` refuses options that fail here, before anything
    /// starts. After it passes, no arithmetic on these values can overflow.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let max_timeout = match self.path {
            FetchPath::Short => FETCH_BUDGET_MS,
            FetchPath::Auto | FetchPath::Long => LONG_FETCH_BUDGET_MS,
        };
        within("timeout_ms", self.timeout_ms, 1, max_timeout)?;
        within(
            "retry.max_attempts",
            self.retry.max_attempts as u64,
            1,
            MAX_ATTEMPTS as u64,
        )?;
        within(
            "retry.max_delay_ms",
            self.retry.max_delay_ms,
            0,
            FETCH_BUDGET_MS,
        )?;
        within(
            "retry.base_delay_ms",
            self.retry.base_delay_ms,
            0,
            self.retry.max_delay_ms,
        )?;
        within("max_body_bytes", self.max_body_bytes, 0, MAX_BODY_LIMIT)?;
        within("shards", self.shards as u64, 1, 1024)?;
        within("backstop_grace_ms", self.backstop_grace_ms, 0, 3_600_000)?;
        within("queue_wait_ms", self.queue_wait_ms, 0, 3_600_000)?;
        within(
            "max_age_ms",
            self.max_age(),
            self.backstop_after_ms(),
            7 * 24 * 3_600_000,
        )?;
        if self.durability == Durability::LostOnCrash && !self.to_executor() {
            return Err(InvalidOption {
                option: "durability".into(),
                message: "LostOnCrash is for the direct flow's short path only (the orchestrator \
                          and the long path's claims need the request's record)"
                    .into(),
            });
        }
        name("executor_binding", &self.executor_binding)?;
        name("orchestrator_binding", &self.orchestrator_binding)?;
        name("orchestrator_instance", &self.orchestrator_instance)?;
        name("queue_binding", &self.queue_binding)?;
        if self.flow == Flow::Orchestrated && self.is_long() {
            return Err(InvalidOption {
                option: "path".into(),
                message: "the long path (a timeout_ms above 25 000, or path: long) takes the \
                          direct flow only in this version"
                    .into(),
            });
        }
        if let Some(binding) = &self.origin_binding {
            name("origin_binding", binding)?;
        }
        if let Some(id) = &self.request_id {
            name("request_id", id)?;
        }
        if let Some(hosts) = &self.allowed_hosts {
            for host in hosts {
                let bare = host.strip_prefix("*.").unwrap_or(host);
                let ok = !bare.is_empty()
                    && bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
                if !ok {
                    return Err(InvalidOption {
                        option: "allowed_hosts".into(),
                        message: format!("`{host}` is not a host name or `*.domain`"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the request takes the long path (the queue consumer): [`FetchPath::Long`], or
    /// [`FetchPath::Auto`] with a `timeout_ms` above [`FETCH_BUDGET_MS`].
    pub fn is_long(&self) -> bool {
        match self.path {
            FetchPath::Long => true,
            FetchPath::Short => false,
            FetchPath::Auto => self.timeout_ms > FETCH_BUDGET_MS,
        }
    }

    /// Whether the origin hands the job to the executor itself: the direct flow's short path
    /// (the orchestrator calls the executor in the orchestrated flow; the long path's job goes
    /// to the queue).
    pub(crate) fn to_executor(&self) -> bool {
        self.flow == Flow::Direct && !self.is_long()
    }

    /// The fetch budget and delivery reserve of the request's path.
    pub fn budget(&self) -> Budget {
        if self.is_long() {
            Budget::QUEUE
        } else {
            Budget::WAIT_UNTIL
        }
    }

    /// Longest time the fetch's attempts can take: every attempt timing out, plus every
    /// backoff at its cap, within its path's fetch budget.
    pub fn worst_case_ms(&self) -> u64 {
        let attempts = self.retry.max_attempts.max(1) as u64;
        let all = self
            .timeout_ms
            .saturating_mul(attempts)
            .saturating_add(self.retry.max_delay_ms.saturating_mul(attempts - 1));
        all.min(self.budget().fetch_ms)
    }

    /// When the backstop acts on a request that has no result: every attempt, the delivery
    /// and the grace. Saturating, so no value can overflow it.
    pub fn backstop_after_ms(&self) -> u64 {
        self.worst_case_ms()
            .saturating_add(self.budget().delivery_ms)
            .saturating_add(self.backstop_grace_ms)
    }

    /// The request's whole life as the backstop counts it: `max_age_ms`, and on the long path
    /// at least [`MAX_DISPATCHES`](super::protocol::MAX_DISPATCHES) long windows (queue wait
    /// and backstop time), so that a lost job can be sent again.
    pub fn max_age(&self) -> u64 {
        if !self.is_long() {
            return self.max_age_ms;
        }
        let window = self.backstop_after_ms().saturating_add(self.queue_wait_ms);
        self.max_age_ms
            .max(window.saturating_mul(super::protocol::MAX_DISPATCHES as u64))
    }

    /// The orchestrator instance that tracks `request_id`.
    pub fn shard_for(&self, request_id: &str) -> String {
        if self.shards <= 1 {
            return self.orchestrator_instance.clone();
        }
        let hash = request_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        format!(
            "{}-{}",
            self.orchestrator_instance,
            hash % self.shards as u64
        )
    }

    /// Whether `allowed_hosts` lets `host` through (no list: every host).
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        allowed.iter().any(|pattern| host_matches(pattern, host))
    }
}

/// `pattern` is a host name, or `*.domain` for its subdomains; case-insensitive.
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

/// When and how often the executor tries again.
#[cfg_attr(all(feature = "ts", not(target_arch = "wasm32")), derive(ts_rs::TS))]
#[proxy_fetch_macros::__serde_remote_self] // strict_serde!, unseen by ts-rs (strict.rs)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u32>", optional)
    )]
    pub max_attempts: u32,
    /// Backoff step before the first retry (ms, default 200, at most `max_delay_ms`); it
    /// doubles for each further retry up to `max_delay_ms`, and the delay is a uniform random
    /// fraction of the step (full jitter).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub base_delay_ms: u64,
    /// Longest delay before a retry, a 429's `Retry-After` included (ms, default 5 000, at
    /// most [`FETCH_BUDGET_MS`]).
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<u64>", optional)
    )]
    pub max_delay_ms: u64,
    /// Retry requests with non-idempotent methods (POST, PATCH) too. Off by default: the
    /// upstream may have acted on the first attempt.
    #[cfg_attr(
        all(feature = "ts", not(target_arch = "wasm32")),
        ts(as = "Option<bool>", optional)
    )]
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
    /// The upstream answered: 429 and 502 to 504 are retryable, any other status is the result.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response's `Retry-After`, in ms from now, if it had a readable one.
        retry_after_ms: Option<u64>,
    },
    /// The upstream could not be reached or dropped the connection: retryable.
    NetworkError,
    /// No complete response within the attempt's timeout: not retried (another would double
    /// the wait).
    Timeout,
    /// A policy refused it (body over `max_body_bytes`, redirect off `allowed_hosts`):
    /// another attempt would meet the same answer.
    Refused,
}

impl RetryPolicy {
    /// One attempt, no retry (the other fields keep their defaults).
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
    fn the_backstop_waits_for_every_attempt_and_the_delivery() {
        let o = ProxyFetchOptions {
            timeout_ms: 1_000,
            backstop_grace_ms: 500,
            ..Default::default()
        };
        assert_eq!(
            o.backstop_after_ms(),
            3 * 1_000 + 2 * 5_000 + DELIVERY_RESERVE_MS + 500
        );
        let d = ProxyFetchOptions::default();
        assert_eq!(
            d.backstop_after_ms(),
            INVOCATION_BUDGET_MS + d.backstop_grace_ms
        );
    }

    #[test]
    fn defaults_are_valid_and_out_of_range_values_are_named() {
        assert_eq!(ProxyFetchOptions::default().validate(), Ok(()));
        let bad = |o: ProxyFetchOptions| o.validate().map_err(|e| e.option);
        let d = ProxyFetchOptions::default;
        assert_eq!(
            bad(ProxyFetchOptions {
                timeout_ms: u64::MAX,
                ..d()
            }),
            Err("timeout_ms".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                timeout_ms: 0,
                ..d()
            }),
            Err("timeout_ms".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                max_body_bytes: 40 << 20,
                ..d()
            }),
            Err("max_body_bytes".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions { shards: 0, ..d() }),
            Err("shards".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                backstop_grace_ms: u64::MAX,
                ..d()
            }),
            Err("backstop_grace_ms".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                max_age_ms: 1,
                ..d()
            }),
            Err("max_age_ms".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                request_id: Some("a b".into()),
                ..d()
            }),
            Err("request_id".into())
        );
        assert_eq!(
            bad(ProxyFetchOptions {
                allowed_hosts: Some(vec!["a/b".into()]),
                ..d()
            }),
            Err("allowed_hosts".into())
        );
        let retry = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            bad(ProxyFetchOptions { retry, ..d() }),
            Err("retry.max_attempts".into())
        );
    }

    #[test]
    fn unknown_option_keys_are_refused() {
        let e = serde_json::from_str::<ProxyFetchOptions>(r#"{"timeout":5}"#);
        assert!(e.is_err_and(|e| e.to_string().contains("unknown field `timeout`")));
        let ok = serde_json::from_str::<ProxyFetchOptions>(r#"{"flow":"orchestrated"}"#);
        assert_eq!(ok.map(|o| o.flow).ok(), Some(Flow::Orchestrated));
    }
}
