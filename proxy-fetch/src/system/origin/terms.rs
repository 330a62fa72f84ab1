//! What an origin knows of the executors it sends jobs to: each one's terms
//! ([`ExecutorTerms`]: the URLs its policy allows, the Durable Object bindings its worker has),
//! learned from it once a minute per isolate. A start checks them here, so it refuses at once
//! what the executor would refuse without waiting for the executor: only a start that finds
//! an executor's terms unknown asks for them and waits; stale terms are asked for again in the
//! background.
//!
//! Starts never wait for one another's call: a future woken from another Durable Object's call
//! would go on in that object's I/O context, where workerd refuses its storage.

use std::cell::RefCell;
use worker::{Env, Url};

use crate::rpc::{CallError, RpcError, RpcErrorKind};
use crate::system::protocol::{ExecutorClient, ExecutorTerms, NO_POLICY};
use crate::system::{now_ms, ExecutorPolicy, ProxyFetchError};

/// How long an isolate goes by the terms it learned before it asks again.
const TERMS_TTL_MS: f64 = 60_000.0;

/// An executor's terms as the origin learned them.
#[derive(Clone)]
pub(super) enum Learned {
    Terms(ExecutorTerms, ExecutorPolicy),
    /// It has no policy, or one it cannot read, and refuses every job: why.
    Refuses(String),
}

struct Known {
    /// When they were learned, or last asked for again.
    at: f64,
    learned: Learned,
}

thread_local! {
    /// By executor binding.
    static EXECUTORS: RefCell<Vec<(String, Known)>> = const { RefCell::new(Vec::new()) };
}

/// The terms of the executor behind `binding`: those known, or (when none are) what it says
/// now. `Err` when it could not be asked.
pub(super) async fn learn(env: &Env, binding: &str) -> Result<Learned, RpcError> {
    let now = now_ms();
    let known = EXECUTORS.with(|e| {
        let mut executors = e.borrow_mut();
        let (_, known) = executors.iter_mut().find(|(b, _)| b == binding)?;
        if now - known.at >= TERMS_TTL_MS {
            // Stale: asked for again once, in the background; this start goes by them.
            known.at = now;
            let (env, binding) = (env.clone(), binding.to_owned());
            wasm_bindgen_futures::spawn_local(async move {
                if ask(&env, &binding).await.is_err() {
                    forget(&binding);
                }
            });
        }
        Some(known.learned.clone())
    });
    match known {
        Some(learned) => Ok(learned),
        None => ask(env, binding).await,
    }
}

/// Asks the executor behind `binding` for its terms, and keeps what it says.
async fn ask(env: &Env, binding: &str) -> Result<Learned, RpcError> {
    let executor = ExecutorClient::from_env(env, binding)?;
    let learned = match executor.terms().await {
        Ok(terms) => match ExecutorPolicy::parse(&terms.allow) {
            Ok(policy) => Learned::Terms(terms, policy),
            Err(why) => Learned::Refuses(why),
        },
        Err(CallError::Handler(e)) if e.kind == NO_POLICY => Learned::Refuses(e.message),
        Err(CallError::Handler(e)) => {
            return Err(RpcError::new(RpcErrorKind::Remote, "terms", e.to_string()))
        }
        Err(CallError::Rpc(e)) => return Err(e),
    };
    let known = Known {
        at: now_ms(),
        learned: learned.clone(),
    };
    EXECUTORS.with(|e| {
        let mut executors = e.borrow_mut();
        match executors.iter_mut().find(|(b, _)| b == binding) {
            Some((_, slot)) => *slot = known,
            None => executors.push((binding.to_owned(), known)),
        }
    });
    Ok(learned)
}

/// Forgets the terms of the executor behind `binding` (a call to it failed): the next start
/// asks again, and fails at once if it cannot be reached.
pub(super) fn forget(binding: &str) {
    EXECUTORS.with(|e| e.borrow_mut().retain(|(b, _)| b != binding));
}

/// Refuses what an executor on `learned` terms would: a URL outside its policy
/// ([`ProxyFetchError::Rejected`]), a job naming one of `bindings` that its worker lacks
/// ([`ProxyFetchError::MissingBinding`]).
pub(super) fn check(
    learned: &Learned,
    url: &Url,
    bindings: &[&str],
) -> Result<(), ProxyFetchError> {
    match learned {
        Learned::Refuses(why) => Err(ProxyFetchError::Rejected(why.clone())),
        Learned::Terms(terms, policy) => {
            policy.check(url).map_err(ProxyFetchError::Rejected)?;
            match terms.lacking(bindings) {
                Some(why) => Err(ProxyFetchError::MissingBinding(why)),
                None => Ok(()),
            }
        }
    }
}
