//! Starting a request, and what an origin asks about the requests it started: `proxy_fetch`
//! checks the request, its options and the bindings it needs, builds the request's record and
//! hands it to the ledger's writer, which stores it and sends its job ([`super::writer`]);
//! `cancel` and `pending`.

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::{Env, Url};

use super::dispatch::{dispatch_all, due_after, forget_queued, long_path_unavailable};
use super::ledger::{self, Kept, Op, PendingRecord, RowPages, Start, Take};
use super::receive::{deliver_error, run_handler};
use super::terms;
use super::writer::{find, write};
use super::{Continuation, Held, ProxyFetchOrigin, SETTLING, STARTING};
use crate::rpc::{log_error, RpcErrorKind};
use crate::system::batch;
use crate::system::protocol::{DeliveryOutcome, FetchJob, LongQueue, OriginRef};
use crate::system::{
    binding_class, now_ms, random_hex, Durability, FetchError, FetchErrorKind, Flow,
    ProxyFetchError, ProxyFetchOptions, ProxyRequest, RequestId,
};

/// Checks the request and returns it with its URL in the one form both the origin's and the
/// executor's checks see.
fn checked_request(
    mut request: ProxyRequest,
    options: &ProxyFetchOptions,
) -> Result<(ProxyRequest, Url), ProxyFetchError> {
    let url = request.check().map_err(ProxyFetchError::InvalidRequest)?;
    let host = url.host_str().unwrap_or_default();
    if !options.host_allowed(host) {
        return Err(ProxyFetchError::Rejected(format!(
            "host `{host}` is not in allowed_hosts"
        )));
    }
    Ok((request, url))
}

/// What a binding must be.
#[derive(Clone, Copy, PartialEq)]
enum BindingKind {
    /// A Durable Object namespace (`[[durable_objects.bindings]]`).
    DurableObject,
    /// A service binding (`[[services]]`) to a Worker entrypoint.
    Service,
}

fn has_binding(env: &Env, name: &str) -> bool {
    js_sys::Reflect::get(env, &JsValue::from_str(name)).is_ok_and(|v| !v.is_undefined())
}

/// Checks that `env` has binding `name` of the `kind` the request needs: a missing or wrong
/// one is an error now, not a `Backstop` a minute later. The message names the option to set.
/// A binding found fit is not looked at again in this isolate: its `env` does not change.
fn require_binding(
    env: &Env,
    name: &str,
    option: &str,
    kind: BindingKind,
) -> Result<(), ProxyFetchError> {
    thread_local! {
        static FIT: std::cell::RefCell<Vec<(String, BindingKind)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    if FIT.with(|fit| fit.borrow().iter().any(|(n, k)| n == name && *k == kind)) {
        return Ok(());
    }
    check_binding(env, name, option, kind)?;
    FIT.with(|fit| fit.borrow_mut().push((name.to_owned(), kind)));
    Ok(())
}

fn check_binding(
    env: &Env,
    name: &str,
    option: &str,
    kind: BindingKind,
) -> Result<(), ProxyFetchError> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
    if value.is_undefined() {
        return Err(ProxyFetchError::MissingBinding(format!(
            "`{name}` is not in env; add it to wrangler.toml or set ProxyFetchOptions::{option}"
        )));
    }
    // A service binding answers any property (each is an RPC method), so the kinds are told
    // apart by the binding's class.
    let class = binding_class(env, name);
    let namespace = class == "DurableObjectNamespace";
    let (fits, wanted) = match kind {
        BindingKind::DurableObject => (
            namespace,
            "a Durable Object namespace ([[durable_objects.bindings]])",
        ),
        BindingKind::Service => (
            !namespace && crate::rpc::js::get(&value, "fetch").is_ok_and(|f| f.is_function()),
            "a service binding ([[services]] with entrypoint = \"FetchExecutorEntrypoint\")",
        ),
    };
    if fits {
        Ok(())
    } else {
        Err(ProxyFetchError::MissingBinding(format!(
            "`{name}` ({option}) is not {wanted}, but a {}",
            if class.is_empty() {
                "value of another kind"
            } else {
                &class
            }
        )))
    }
}

/// Starts a proxied fetch: the executor fetches it while this Durable Object is free to do
/// other work. Returns the request id once the request's record is written (direct flow: its
/// job is sent meanwhile, and one the executor does not take is sent again by the origin's alarm;
/// orchestrated: once the orchestrator stored it too; long path: once the queue has it). Nothing
/// leaves this Durable Object until that write is on disk, the answer of the call that started
/// it included (the output gate): a caller told of the id is told of a recorded request. The
/// result arrives later at the continuation's handler. What the executor would refuse (a URL
/// outside its policy, an origin binding its worker lacks) is refused now, from the terms it
/// gave this isolate: only a start that finds them unknown waits for the executor.
///
/// Starts made while an earlier one of this Durable Object is being written wait for it (until
/// its row is on disk), and then share one ledger row and fuller executor calls.
pub async fn proxy_fetch<O: ProxyFetchOrigin, D: Serialize>(
    origin: &O,
    request: impl Into<ProxyRequest>,
    continuation: Continuation<O, D>,
    options: &ProxyFetchOptions,
) -> Result<RequestId, ProxyFetchError> {
    options
        .validate()
        .map_err(ProxyFetchError::InvalidOptions)?;
    let (request, url) = checked_request(request.into(), options)?;
    let _starting;
    let id = match &options.request_id {
        Some(id) => {
            // Starting a request again while it is pending (or being started) starts nothing.
            _starting = match Held::take(&STARTING, origin, id) {
                Some(claim) => claim,
                None => return Ok(id.clone()),
            };
            // Pending under either durability: one id, one request.
            let pending = ledger::is_kept(origin.state(), id)
                || find(origin, id)
                    .await
                    .map_err(ProxyFetchError::storage)?
                    .is_some();
            if pending {
                return Ok(id.clone());
            }
            Some(id.clone())
        }
        None => None,
    };
    let env = origin.env();
    let origin_binding = options
        .origin_binding
        .clone()
        .unwrap_or_else(|| O::INFERRED_BINDING.to_owned());
    require_binding(
        env,
        &origin_binding,
        "origin_binding",
        BindingKind::DurableObject,
    )?;
    let executor = &options.executor_binding;
    // The long path needs its queue: without it the request is refused now, never left to
    // end as a `Timeout` the waitUntil window would cut short.
    if options.is_long() && LongQueue::from_env(env, &options.queue_binding).is_none() {
        return Err(long_path_unavailable(options));
    }
    match options.flow {
        // The long path's executor terms are checked below when the worker binds it too.
        Flow::Direct if options.is_long() => {}
        Flow::Direct => require_binding(env, executor, "executor_binding", BindingKind::Service)?,
        Flow::Orchestrated => require_binding(
            env,
            &options.orchestrator_binding,
            "orchestrator_binding",
            BindingKind::DurableObject,
        )?,
    }
    // What the executor would refuse, refused now from the terms it gave (a start waits for
    // them only when this isolate does not know them yet). The direct flow's executor must be
    // reached: its start is answered before its job is acknowledged. The others' executor is
    // reached by the orchestrator or the queue consumer, so an unreachable one is theirs to
    // find; the long path's results are delivered by the consumer, whose bindings are this
    // worker's.
    let direct = options.to_executor();
    if direct || has_binding(env, executor) {
        let bindings: &[&str] = match options.flow {
            Flow::Direct if options.is_long() => &[],
            Flow::Direct => &[&origin_binding],
            Flow::Orchestrated => &[&origin_binding, &options.orchestrator_binding],
        };
        match terms::learn(env, executor).await {
            Ok(learned) => terms::check(&learned, &url, bindings)?,
            // An executor of a version before `terms` checks every job itself.
            Err(e) if e.kind == RpcErrorKind::NoSuchMethod => {}
            Err(e) if direct => return Err(ProxyFetchError::Dispatch(e)),
            Err(_) => {}
        }
    }
    let data = serde_json::to_value(&continuation.data).map_err(ProxyFetchError::storage)?;
    // Refused here, not when its row is written with others' records (or when its handler
    // would be called): e.g. an integer beyond 2^53, which a JS number cannot hold.
    crate::rpc::to_js_value(&data).map_err(|e| {
        ProxyFetchError::storage(format!("the continuation data cannot be stored: {e}"))
    })?;

    let mut job = FetchJob {
        // A recorded request's id is given in the writer's round, with the orchestrator shard
        // that follows from it.
        id: RequestId::new(),
        token: random_hex(16)?,
        request,
        origin: OriginRef {
            binding: origin_binding,
            id: origin.state().id().to_string(),
        },
        queue: None,
        options: options.clone(),
    };
    if options.durability == Durability::LostOnCrash {
        job.id = match id {
            Some(id) => id,
            None => random_hex(16)?,
        };
        return start_unrecorded(origin, job, continuation.handler, data).await;
    }
    let now = now_ms();
    let record = PendingRecord {
        handler: continuation.handler.to_owned(),
        data,
        created_ms: now,
        due_ms: now + due_after(options),
        dispatches: 1,
        handler_runs: 0,
        body_apart: false,
        claims: 0,
        claimed_ms: None,
        job,
    };
    let bytes = record.bytes();
    let (reply, answer) = batch::reply();
    let start = Start {
        id,
        record,
        bytes,
        reply,
    };
    write(origin, Op::Start(Box::new(start)), answer)
        .await
        .unwrap_or_else(|| Err(ProxyFetchError::storage("the ledger's writer stopped")))
}

/// Starts a request that only this instance's memory holds ([`Durability::LostOnCrash`]): no
/// row, no alarm, one executor call of its own (nothing to wait for a round of the writer).
async fn start_unrecorded<O: ProxyFetchOrigin>(
    origin: &O,
    job: FetchJob,
    handler: &str,
    data: serde_json::Value,
) -> Result<RequestId, ProxyFetchError> {
    let id = job.id.clone();
    let kept = Kept {
        handler: handler.to_owned(),
        data,
        token: job.token.clone(),
        due_ms: now_ms() + due_after(&job.options),
    };
    // Held before the job goes: its result may come before the executor's answer.
    ledger::keep(origin.state(), &id, kept)?;
    match dispatch_all(origin.env(), vec![job]).await {
        Ok(()) => Ok(id),
        Err(e) => match ledger::take_kept(origin.state(), &id, None) {
            Take::Taken(_) => Err(e),
            // Its result came (the executor had it after all): it is started, and done.
            Take::NotHeld | Take::WrongToken => Ok(id),
        },
    }
}

/// Cancels a pending request: its handler receives `FetchErrorKind::Cancelled` now, and a
/// response that arrives later is dropped. Returns `false` if the request already had its
/// result (or never existed here).
pub async fn cancel<O: ProxyFetchOrigin>(
    origin: &O,
    request_id: &str,
) -> Result<bool, ProxyFetchError> {
    if let Take::Taken(kept) = ledger::take_kept(origin.state(), request_id, None) {
        let error = FetchError::new(
            request_id,
            FetchErrorKind::Cancelled,
            "cancelled by the origin",
        );
        run_handler(origin, request_id, &kept.handler, kept.data, Err(error)).await;
        return Ok(true);
    }
    let Some(record) = find(origin, request_id)
        .await
        .map_err(ProxyFetchError::storage)?
    else {
        return Ok(false);
    };
    let delivered = deliver_error(
        origin,
        request_id,
        FetchErrorKind::Cancelled,
        "cancelled by the origin".into(),
        false,
    )
    .await?;
    if delivered != DeliveryOutcome::Delivered {
        return Ok(false);
    }
    // The orchestrator no longer needs to watch it.
    forget_queued(origin.env(), &record).await;
    Ok(true)
}

/// Requests of this origin still waiting for their result.
pub async fn pending<O: ProxyFetchOrigin>(origin: &O) -> Result<Vec<RequestId>, ProxyFetchError> {
    let mut ids = ledger::kept_ids(origin.state());
    let mut pages = RowPages::new();
    while let Some(page) = pages
        .next(origin.state())
        .await
        .map_err(ProxyFetchError::storage)?
    {
        for (key, row) in page {
            match row {
                // Not a request settled meanwhile, whose row a lingering round still holds.
                Ok(row) => ids.extend(
                    row.into_keys()
                        .filter(|id| !Held::is_held(&SETTLING, origin, id)),
                ),
                // The sweep sets it aside, with a log line.
                Err(_) => log_error(&format!(
                    "proxy-fetch: ledger row {key} cannot be decoded; its requests are not listed"
                )),
            }
        }
    }
    Ok(ids)
}
