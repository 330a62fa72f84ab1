//! Property tests: caller-controlled values (options, delivery payloads, the executor's policy)
//! never panic the code that reads them, and options that pass validation keep every derived
//! time in range.

use proptest::prelude::*;
use proxy_fetch::system::{
    Attempt, ExecutorPolicy, FetchResult, Flow, ProxyFetchOptions, RetryPolicy, FETCH_BUDGET_MS,
};

fn options() -> impl Strategy<Value = ProxyFetchOptions> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<bool>()),
    )
        .prop_map(
            |((timeout, body, shards, grace, age), (attempts, base, cap, flow))| {
                ProxyFetchOptions {
                    flow: if flow {
                        Flow::Direct
                    } else {
                        Flow::Orchestrated
                    },
                    timeout_ms: timeout % 100_000,
                    max_body_bytes: body,
                    shards,
                    backstop_grace_ms: grace,
                    max_age_ms: age,
                    retry: RetryPolicy {
                        max_attempts: attempts % 20,
                        base_delay_ms: base % 60_000,
                        max_delay_ms: cap % 60_000,
                        retry_non_idempotent: false,
                    },
                    ..ProxyFetchOptions::default()
                }
            },
        )
}

proptest! {
    #[test]
    fn validated_options_keep_every_derived_time_in_range(o in options()) {
        if o.validate().is_ok() {
            prop_assert!(o.worst_case_ms() <= FETCH_BUDGET_MS);
            prop_assert!(o.backstop_after_ms() <= o.max_age_ms);
            prop_assert!(o.timeout_ms >= 1 && o.timeout_ms <= FETCH_BUDGET_MS);
        }
        // Whatever the values, the derived times saturate instead of overflowing.
        let _ = o.backstop_after_ms();
    }

    #[test]
    fn raw_option_values_never_panic(timeout in any::<u64>(), attempts in any::<u32>(), cap in any::<u64>(), grace in any::<u64>()) {
        let o = ProxyFetchOptions {
            timeout_ms: timeout,
            backstop_grace_ms: grace,
            retry: RetryPolicy { max_attempts: attempts, max_delay_ms: cap, ..RetryPolicy::default() },
            ..ProxyFetchOptions::default()
        };
        let _ = o.validate();
        let _ = o.backstop_after_ms();
    }

    #[test]
    fn retry_delays_never_exceed_the_cap(p in options(), attempt in any::<u32>(), status in any::<u16>(), after in proptest::option::of(any::<u64>()), jitter in any::<f64>()) {
        let seen = Attempt::Status { status, retry_after_ms: after };
        if let Some(d) = p.retry.next_delay(attempt.max(1), seen, true, jitter) {
            prop_assert!(d <= p.retry.max_delay_ms.max(p.retry.base_delay_ms));
        }
    }

    #[test]
    fn option_objects_with_any_keys_decode_or_fail_cleanly(keys in proptest::collection::vec("[a-z_]{1,12}", 0..6), n in any::<i64>()) {
        let object: serde_json::Map<String, serde_json::Value> =
            keys.iter().map(|k| (k.clone(), serde_json::json!(n))).collect();
        let known = ["flow", "timeout_ms", "retry", "max_body_bytes", "allowed_hosts", "executor_binding",
            "orchestrator_binding", "orchestrator_instance", "shards", "origin_binding",
            "backstop_grace_ms", "max_age_ms", "request_id"];
        let decoded = serde_json::from_value::<ProxyFetchOptions>(serde_json::Value::Object(object));
        if keys.iter().any(|k| !known.contains(&k.as_str())) {
            prop_assert!(decoded.is_err(), "an unknown key is refused");
        }
    }

    #[test]
    fn delivery_payloads_of_any_shape_decode_or_fail_cleanly(json in arbitrary_json(4)) {
        let _ = serde_json::from_value::<FetchResult>(json);
    }

    #[test]
    fn any_policy_text_and_url_are_judged_without_panicking(spec in ".{0,60}", url in "[a-z]{2,6}://[a-z0-9.:\\[\\]*-]{0,30}/?") {
        if let (Ok(policy), Ok(url)) = (ExecutorPolicy::parse(&spec), worker::Url::parse(&url)) {
            let _ = policy.check(&url);
        }
    }
}

fn arbitrary_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("Ok".to_owned()),
                    Just("Err".to_owned()),
                    Just("request_id".to_owned()),
                    Just("status".to_owned()),
                    Just("body".to_owned()),
                    Just("kind".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
