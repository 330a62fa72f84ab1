//! What an origin knows of the executors it sends jobs to: each one's terms
//! ([`ExecutorTerms`]: the URLs its policy allows, the Durable Object bindings its worker has),
//! learned from it once a minute per isolate. A start checks them here, so it refuses at once
//! what the executor would refuse without waiting for the executor: only a start that finds
//! an executor's terms unknown waits, for the one `terms` call every start meanwhile shares;
//! stale terms are asked again in the background.

use std::cell::RefCell;
use std::task::{Poll, Waker};
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

enum Entry {
    /// Its `terms` call is under way; the terms known before, if any, serve meanwhile.
    Asking {
        before: Option<Learned>,
        waiting: Vec<Waker>,
    },
    Known {
        at: f64,
        learned: Learned,
    },
    /// The last call failed: the next start asks again.
    Unreachable(RpcError),
}

thread_local! {
    /// By executor binding (`None` only while looked at).
    static EXECUTORS: RefCell<Vec<(String, Option<Entry>)>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with what is known of the executor behind `binding` (`None`: nothing, and what
/// `f` leaves there is kept).
fn with_entry<T>(binding: &str, f: impl FnOnce(&mut Option<Entry>) -> T) -> T {
    EXECUTORS.with(|e| {
        let mut executors = e.borrow_mut();
        let i = match executors.iter().position(|(b, _)| b == binding) {
            Some(i) => i,
            None => {
                executors.push((binding.to_owned(), None));
                executors.len() - 1
            }
        };
        let Some((_, entry)) = executors.get_mut(i) else {
            return f(&mut None);
        };
        let out = f(entry);
        if entry.is_none() {
            executors.swap_remove(i);
        }
        out
    })
}

/// The terms of the executor behind `binding`: those known, or (when none are) what it says
/// now. `Err` when it could not be asked.
pub(super) async fn learn(env: &Env, binding: &str) -> Result<Learned, RpcError> {
    let now = now_ms();
    // The terms this start goes by, if it need not wait.
    let serving = with_entry(binding, |entry| {
        match entry {
            Some(Entry::Known { at, learned }) if now - *at < TERMS_TTL_MS => {
                return Some(learned.clone())
            }
            Some(Entry::Asking { before, .. }) => return before.clone(),
            _ => {}
        }
        // Stale, unreachable the last time, or never asked: ask now, and go by the stale terms
        // meanwhile (with none, this start waits).
        let before = match entry.take() {
            Some(Entry::Known { learned, .. }) => Some(learned),
            _ => None,
        };
        *entry = Some(Entry::Asking {
            before: before.clone(),
            waiting: Vec::new(),
        });
        wasm_bindgen_futures::spawn_local(ask(env.clone(), binding.to_owned()));
        before
    });
    if let Some(learned) = serving {
        return Ok(learned);
    }
    std::future::poll_fn(|cx| {
        with_entry(binding, |entry| match entry {
            Some(Entry::Known { learned, .. }) => Poll::Ready(Ok(learned.clone())),
            Some(Entry::Unreachable(e)) => Poll::Ready(Err(e.clone())),
            Some(Entry::Asking { waiting, .. }) => {
                waiting.push(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Err(RpcError::new(
                RpcErrorKind::Remote,
                "terms",
                format!("the terms of the executor `{binding}` were forgotten while asked for"),
            ))),
        })
    })
    .await
}

/// Asks the executor behind `binding` for its terms, and wakes the starts that wait for them.
async fn ask(env: Env, binding: String) {
    let answer = match ExecutorClient::from_env(&env, &binding) {
        Ok(executor) => match executor.terms().await {
            Ok(terms) => Ok(match ExecutorPolicy::parse(&terms.allow) {
                Ok(policy) => Learned::Terms(terms, policy),
                Err(why) => Learned::Refuses(why),
            }),
            Err(CallError::Handler(e)) if e.kind == NO_POLICY => Ok(Learned::Refuses(e.message)),
            Err(CallError::Handler(e)) => {
                Err(RpcError::new(RpcErrorKind::Remote, "terms", e.to_string()))
            }
            Err(CallError::Rpc(e)) => Err(e),
        },
        Err(e) => Err(e),
    };
    let waiting = with_entry(&binding, |entry| {
        let waiting = match entry.take() {
            Some(Entry::Asking { waiting, .. }) => waiting,
            _ => Vec::new(),
        };
        *entry = Some(match answer {
            Ok(learned) => Entry::Known {
                at: now_ms(),
                learned,
            },
            Err(e) => Entry::Unreachable(e),
        });
        waiting
    });
    for waker in waiting {
        waker.wake();
    }
}

/// Forgets the terms of the executor behind `binding` (a call to it failed): the next start
/// asks again, and fails at once if it cannot be reached.
pub(super) fn forget(binding: &str) {
    with_entry(binding, |entry| {
        if matches!(entry, Some(Entry::Known { .. })) {
            *entry = None;
        }
    });
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
