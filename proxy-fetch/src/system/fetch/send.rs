//! Results on their way back to their origins: results that are ready while a delivery call is
//! under way go together in the next one (one call per origin, under the RPC size limit), and
//! what the origin answers is read once, here, for every sender ([`verdicts`]).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::Env;

use crate::rpc::{log_error, CallError, HandlerError, RpcError, RpcErrorKind};
use crate::system::batch::{self, Batcher};
use crate::system::concurrent;
use crate::system::protocol::{
    deliver_method, weight, DeliveryOutcome, FetchJob, OriginClient, OriginRef, CALL_BYTES,
    FORBIDDEN, MAX_DELIVERIES_PER_CALL, RETRY,
};
use crate::system::{now_ms, wire, Durability, FetchResult, RequestId};

/// Deliveries to the origin: tries, and the first backoff (doubling).
const DELIVERY_TRIES: u32 = 5;
const DELIVERY_BACKOFF_MS: u64 = 100;
/// How long a delivery round waits while jobs of its run are still fetching, so that one call
/// carries the results that come meanwhile: a delivery call less, and a row write less at the
/// origin, for at most this much latency per result. (A direct origin's jobs of one call are
/// its starts of one moment; an orchestrator's or a queue batch's may go to several origins.)
const SIBLINGS_WAIT_MS: u64 = 10;

/// What the origin's answer means for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The origin has the result (or had one, or refused it for good): the sender is done.
    Done,
    /// The origin could not take it now: try again. `answered` says whether the origin said
    /// so (its storage failing); `false` when the call got no answer (unreachable, or its
    /// instance died, maybe while running the handler).
    Again { why: String, answered: bool },
    /// The origin refused the token: the job was not the request's own.
    Forbidden,
}

/// What an origin answered to a delivery call of the results of `ids` (in order): one verdict
/// each. Refusals are logged here.
pub(crate) fn verdicts(
    ids: &[&str],
    answer: Result<Vec<Result<DeliveryOutcome, HandlerError>>, CallError<HandlerError>>,
) -> Vec<Verdict> {
    let refused = |id: &str, e: &HandlerError| {
        log_error(&format!("proxy-fetch {id}: origin refused the result: {e}"));
        Verdict::Done
    };
    match answer {
        Ok(outcomes) if outcomes.len() == ids.len() => ids
            .iter()
            .zip(outcomes)
            .map(|(id, outcome)| match outcome {
                Ok(DeliveryOutcome::Delivered | DeliveryOutcome::Duplicate) => Verdict::Done,
                Err(e) if e.kind == RETRY => Verdict::Again {
                    why: e.to_string(),
                    answered: true,
                },
                Err(e) if e.kind == FORBIDDEN => {
                    log_error(&format!("proxy-fetch {id}: origin refused the token: {e}"));
                    Verdict::Forbidden
                }
                Err(e) => refused(id, &e),
            })
            .collect(),
        Ok(outcomes) => {
            let why = format!("{} outcomes for {} results", outcomes.len(), ids.len());
            let again = || Verdict::Again {
                why: why.clone(),
                answered: false,
            };
            ids.iter().map(|_| again()).collect()
        }
        Err(CallError::Handler(e)) if e.kind != RETRY => {
            ids.iter().map(|id| refused(id, &e)).collect()
        }
        Err(e) => {
            let answered = matches!(&e, CallError::Handler(_));
            let again = || Verdict::Again {
                why: e.to_string(),
                answered,
            };
            ids.iter().map(|_| again()).collect()
        }
    }
}

/// How a delivery to the origin ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    /// The origin has the result (or had one, or refused it for good).
    Done,
    /// Not delivered within the budget.
    Failed,
    /// The origin refused the token: the job was not the request's own.
    Forbidden,
}

/// A result waiting in the outbox for a delivery call to its origin.
struct Outgoing {
    id: RequestId,
    origin: OriginRef,
    token: String,
    /// The request was started `LostOnCrash`.
    lost_on_crash: bool,
    /// A call that carried it got no answer: the next delivery says it is sent again.
    again: bool,
    result: Rc<FetchResult>,
    reply: batch::Reply<Handed>,
}

impl Outgoing {
    /// About how many bytes the result takes in a delivery call.
    fn weight(&self) -> usize {
        match self.result.as_ref() {
            Ok(response) => weight(response.body.len(), &response.url, &response.headers),
            Err(error) => weight(error.message.len(), "", &[]),
        }
    }
}

/// A [`protocol::Delivery`](crate::system::protocol::Delivery), encoded from borrowed parts.
#[derive(Serialize)]
struct DeliveryRef<'a> {
    result: &'a FetchResult,
    token: &'a str,
    again: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    lost_on_crash: bool,
}

/// The results of one run of jobs on their way to their origins, within the run's budget.
pub(crate) struct Outbox<'a> {
    env: &'a Env,
    /// When the run started: deliveries stop trying at the end of its budget.
    started: f64,
    /// The run's whole budget (ms), fetch and delivery.
    budget_ms: u64,
    batcher: Batcher<Outgoing>,
    /// Jobs of the run whose result is not in the outbox yet ([`Expected`]).
    unready: Cell<usize>,
}

/// A job of the run whose result the outbox expects: a delivery round waits for it, briefly,
/// until it is handed to [`Outbox::deliver`] or dropped (the job ended without a result).
pub(crate) struct Expected<'o, 'a>(&'o Outbox<'a>);

impl Drop for Expected<'_, '_> {
    fn drop(&mut self) {
        let outbox = self.0;
        outbox.unready.set(outbox.unready.get().saturating_sub(1));
        outbox.batcher.nudge();
    }
}

impl<'a> Outbox<'a> {
    pub fn new(env: &'a Env, started: f64, budget_ms: u64) -> Self {
        Outbox {
            env,
            started,
            budget_ms,
            batcher: Batcher::new(),
            unready: Cell::new(0),
        }
    }

    /// A job of the run whose result is to come (one per job, taken before any of them runs).
    pub fn expect(&self) -> Expected<'_, 'a> {
        self.unready.set(self.unready.get() + 1);
        Expected(self)
    }

    /// Delivers `result` of `job` (`expected` as [`expect`](Self::expect) gave it) to its
    /// origin: results that are ready while a delivery call is under way go together in the
    /// next one, and a round waits up to [`SIBLINGS_WAIT_MS`] while the run's other jobs fetch.
    pub async fn deliver(
        &self,
        job: &FetchJob,
        result: &Rc<FetchResult>,
        expected: Expected<'_, 'a>,
    ) -> Handed {
        drop(expected);
        let (reply, answer) = batch::reply();
        let outgoing = Outgoing {
            id: job.id.clone(),
            origin: job.origin.clone(),
            token: job.token.clone(),
            lost_on_crash: job.options.durability == Durability::LostOnCrash,
            again: false,
            result: result.clone(),
            reply,
        };
        self.batcher
            .submit(outgoing, answer, |batch| self.send(batch))
            .await
            .unwrap_or(Handed::Failed)
    }

    /// One delivery call per origin for `batch` (and the results of the run's other jobs that
    /// come within [`SIBLINGS_WAIT_MS`]), each under the RPC size limit.
    async fn send(&self, mut batch: Vec<Outgoing>) {
        if self.unready.get() > 0 {
            let timer = worker::Delay::from(Duration::from_millis(SIBLINGS_WAIT_MS));
            let more = self.batcher.linger_until(timer, || self.unready.get() == 0);
            batch.extend(more.await);
        }
        let mut by_origin: Vec<(usize, Vec<Outgoing>)> = Vec::new();
        for outgoing in batch {
            let bytes = outgoing.weight();
            match by_origin.iter_mut().find(|(sum, group)| {
                group.first().is_some_and(|o| o.origin == outgoing.origin)
                    && group.len() < MAX_DELIVERIES_PER_CALL
                    && sum + bytes <= CALL_BYTES
            }) {
                Some((sum, group)) => {
                    *sum += bytes;
                    group.push(outgoing);
                }
                None => by_origin.push((bytes, vec![outgoing])),
            }
        }
        let sends = by_origin
            .into_iter()
            .map(|(_, group)| self.send_to_origin(group));
        concurrent::all(sends, usize::MAX).await;
    }

    /// One delivery call of `pending` (encoded, `packed` or not) to the origin `client` reaches.
    async fn call_origin(
        client: Option<OriginClient>,
        pending: &[(Outgoing, JsValue)],
        packed: bool,
    ) -> Result<Vec<Result<DeliveryOutcome, HandlerError>>, CallError<HandlerError>> {
        let method = deliver_method(packed);
        let unreachable = |why: &str| {
            Err(CallError::Rpc(RpcError::new(
                RpcErrorKind::Remote,
                method,
                why,
            )))
        };
        let Some(client) = client else {
            return unreachable("the origin is not reachable");
        };
        let Some(stub) = client.stub() else {
            return unreachable("the origin's client has no stub");
        };
        let deliveries: js_sys::Array = pending.iter().map(|(_, encoded)| encoded).collect();
        stub.call(method, js_sys::Array::of1(&deliveries)).await
    }

    /// Delivers results to their (one) origin, trying again (with backoff) those it could not
    /// take: the origin unreachable, or its storage failing.
    async fn send_to_origin(&self, group: Vec<Outgoing>) {
        let Some(origin) = group.first().map(|o| o.origin.clone()) else {
            return;
        };
        let answer = |outgoing: Outgoing, handed: Handed| {
            outgoing.reply.send(handed);
        };
        // A stub per try: once the origin's instance was reset (a failed write, a crash while
        // a handler ran), every later call on the stub that reached it fails, while a new stub
        // reaches the new instance.
        let client = || {
            let client = OriginClient::from_id(self.env, &origin.binding, &origin.id);
            if let Err(e) = &client {
                log_error(&format!(
                    "proxy-fetch: origin {} not reachable: {e}",
                    origin.id
                ));
            }
            client.ok()
        };
        if client().is_none() {
            group.into_iter().for_each(|o| answer(o, Handed::Failed));
            return;
        }
        // Each result encoded once for every try: a large body is not copied again per try.
        // Packed ([`wire`]) unless the origin lacks the packed method (an earlier build).
        let mut packed = wire::packed_for(&origin.binding);
        let mut pending = encode_all(group, packed, &answer);
        let mut backoff = DELIVERY_BACKOFF_MS;
        for tries in 1..=DELIVERY_TRIES {
            if pending.is_empty() {
                return;
            }
            let mut sent = Self::call_origin(client(), &pending, packed).await;
            if packed && wire::lacked_packed(&origin.binding, &sent) {
                packed = false;
                let outgoing = pending.into_iter().map(|(o, _)| o).collect();
                pending = encode_all(outgoing, packed, &answer);
                sent = Self::call_origin(client(), &pending, packed).await;
            }
            let ids: Vec<&str> = pending.iter().map(|(o, _)| o.id.as_str()).collect();
            let verdicts = verdicts(&ids, sent);
            let mut again = Vec::new();
            let mut why = String::new();
            for ((mut outgoing, encoded), verdict) in pending.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Done => answer(outgoing, Handed::Done),
                    Verdict::Forbidden => answer(outgoing, Handed::Forbidden),
                    Verdict::Again {
                        why: reason,
                        answered,
                    } => {
                        if !answered && !outgoing.again {
                            // The call got no answer: the handler may have run and crashed its
                            // instance. The next delivery says so, and the origin counts it.
                            outgoing.again = true;
                            mark_again(&outgoing, &encoded, packed);
                        }
                        why = reason;
                        again.push((outgoing, encoded));
                    }
                }
            }
            pending = again;
            if pending.is_empty() {
                return;
            }
            let left = self.started + self.budget_ms as f64 - now_ms();
            if tries == DELIVERY_TRIES || left < backoff as f64 {
                for (outgoing, _) in pending {
                    log_error(&format!(
                        "proxy-fetch {}: result not delivered after {tries} tries ({why})",
                        outgoing.id
                    ));
                    answer(outgoing, Handed::Failed);
                }
                return;
            }
            worker::Delay::from(Duration::from_millis(backoff)).await;
            backoff *= 2;
        }
    }
}

/// Encodes each result for a delivery call, packed or as it is (saying whether it is sent
/// again); a result that cannot be encoded is logged and answered `Failed`.
fn encode_all(
    group: Vec<Outgoing>,
    packed: bool,
    answer: &impl Fn(Outgoing, Handed),
) -> Vec<(Outgoing, JsValue)> {
    let mut encoded = Vec::with_capacity(group.len());
    for outgoing in group {
        let item = if packed {
            wire::delivery_to_js(
                &outgoing.result,
                &outgoing.token,
                outgoing.again,
                outgoing.lost_on_crash,
            )
        } else {
            crate::rpc::to_js_value(&DeliveryRef {
                result: &outgoing.result,
                token: &outgoing.token,
                again: outgoing.again,
                lost_on_crash: outgoing.lost_on_crash,
            })
        };
        match item {
            Ok(item) => encoded.push((outgoing, item)),
            Err(e) => {
                log_error(&format!(
                    "proxy-fetch {}: result not encoded: {e}",
                    outgoing.id
                ));
                answer(outgoing, Handed::Failed);
            }
        }
    }
    encoded
}

/// Marks an encoded result as sent again (see [`Delivery::again`](crate::system::protocol::Delivery::again)).
fn mark_again(outgoing: &Outgoing, encoded: &JsValue, packed: bool) {
    let marked = if packed {
        wire::mark_again(
            encoded,
            &outgoing.result,
            &outgoing.token,
            outgoing.lost_on_crash,
        )
    } else {
        js_sys::Reflect::set(encoded, &crate::rpc::js::name("again"), &true.into())
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    };
    if let Err(e) = marked {
        log_error(&format!(
            "proxy-fetch {}: not marked as sent again: {e}",
            outgoing.id
        ));
    }
}
