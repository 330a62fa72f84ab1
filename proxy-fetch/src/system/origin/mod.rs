//! The origin: the Durable Object that starts proxied fetches and receives their results.
//!
//! - [`start`]: `proxy_fetch`, `cancel`, `pending`, the API a user calls.
//! - [`ledger`]: the records of pending requests, in shared rows, with one writer per
//!   instance; [`writer`]: the writer's rounds (starts stored and sent, records changed).
//! - [`dispatch`]: jobs on their way to the executor or the orchestrator; [`terms`]: what
//!   the origin knows of its executors, so that a start refuses at once what they would.
//! - [`receive`]: a delivery: token check, claim, the handler's run, the record's removal.
//! - [`claim`]: the long path's claim: the queue consumer asks before it fetches.
//! - [`sweep`]: the origin's alarm, the backstop of the direct flow and the last resort of both.
//!
//! Rows written per request: its share of the row it started in, and the write that removes
//! it (shared with the results that arrive with it, or with the next start, which is written
//! into the row it empties: [`writer`]'s linger), plus an alarm when none is set early enough.
//! A request started `LostOnCrash` writes none: only the instance's memory holds it
//! ([`ledger`]'s `keep`).

mod claim;
mod dispatch;
mod ledger;
mod receive;
mod start;
mod sweep;
mod terms;
mod writer;

use js_sys::Promise;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashSet;
use std::marker::PhantomData;
use worker::{Env, State};

use super::FetchResult;
use crate::rpc::Method;

pub(crate) use claim::serve_claim;
pub(crate) use receive::serve_delivery;
pub use start::{cancel, pending, proxy_fetch};
pub use sweep::alarm;
pub(crate) use sweep::serve_alarm;

/// A Durable Object that starts proxied fetches and receives their results.
///
/// Implement it next to `#[entrypoint(durable_object, origin)]` on the same type; the macro
/// adds the RPC method results arrive through, the table of handlers and the alarm.
pub trait ProxyFetchOrigin: OriginHandlers + worker::DurableObject {
    /// The Durable Object's state (its storage holds the pending requests).
    fn state(&self) -> &State;
    /// The Durable Object's env (its bindings name the executor and the orchestrator).
    fn env(&self) -> &Env;
    /// proxy-fetch uses the Durable Object's alarm as its backstop. Set this to `true` when
    /// the type has an `alarm()` of its own: proxy-fetch then calls it after its own work
    /// whenever the alarm fires (it may fire earlier than you asked: check what is due).
    const OWN_ALARM: bool = false;
}

/// What `#[entrypoint(durable_object, origin)]` generates for a proxy-fetch origin: its
/// continuation handlers, by JS name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` receives proxy-fetch results but its #[entrypoint] is not marked `origin`",
    note = "write #[entrypoint(durable_object, origin)] on `{Self}`'s handler impl"
)]
pub trait OriginHandlers {
    /// The origin's binding when `ProxyFetchOptions::origin_binding` is not set.
    const INFERRED_BINDING: &'static str;
    /// Calls the continuation handler `method` (JS name) with the result and the request's
    /// data (decoded here into the handler's data type); `None` if there is no such handler.
    fn dispatch(
        &self,
        method: &str,
        result: FetchResult,
        data: serde_json::Value,
    ) -> Option<Promise>;
}

/// Which handler of origin `O` receives the result, and the data handed to it along with it.
///
/// Built from a handler's typed handle, so a handler that does not exist or does not take
/// `(FetchResult, D)` does not compile:
/// `Continuation::new(WeatherClient::ON_WEATHER, city)`.
pub struct Continuation<O, D> {
    handler: &'static str,
    data: D,
    _origin: PhantomData<fn() -> O>,
}

impl<O, D: Serialize> Continuation<O, D> {
    /// The handler `handler` of `O` gets the result, and `data` with it.
    pub fn new(handler: Method<O, (FetchResult, D)>, data: D) -> Self {
        Continuation {
            handler: handler.js_name(),
            data,
            _origin: PhantomData,
        }
    }
}

thread_local! {
    /// Requests being delivered right now, by instance and id: a second delivery racing the
    /// first one sees the claim before either touches storage.
    static CLAIMED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Caller-chosen ids being started right now, by instance and id.
    static STARTING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Requests whose record a lingering round of the writer is about to remove: settled, so
    /// not found any more, by instance and id.
    static SETTLING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// A request id held in one of the sets above while its holder works on it.
struct Held(
    &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
    String,
);

impl Held {
    /// Holds request `id` of this instance of `origin` (ids are per object: two objects may
    /// use the same caller id; a claim of a reset instance does not hold its successor's).
    fn take<O: ProxyFetchOrigin>(
        set: &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
        origin: &O,
        id: &str,
    ) -> Option<Held> {
        let key = Self::key(origin, id);
        set.with(|s| s.borrow_mut().insert(key.clone()))
            .then(|| Held(set, key))
    }

    /// Whether request `id` of this instance of `origin` is held in `set`.
    fn is_held<O: ProxyFetchOrigin>(
        set: &'static std::thread::LocalKey<RefCell<HashSet<String>>>,
        origin: &O,
        id: &str,
    ) -> bool {
        let key = Self::key(origin, id);
        set.with(|s| s.borrow().contains(&key))
    }

    fn key<O: ProxyFetchOrigin>(origin: &O, id: &str) -> String {
        format!("{}\n{id}", ledger::instance(origin.state()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.with(|s| s.borrow_mut().remove(&self.1));
    }
}
