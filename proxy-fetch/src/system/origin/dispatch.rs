//! Jobs on their way out: to the executor (direct flow), in calls of up to
//! [`MAX_JOBS_PER_CALL`] sent in turn through the origin's outbox without holding the starts,
//! or to the orchestrator shard that tracks each (orchestrated flow), or to the long path's
//! queue.

use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectState;
use worker::{Env, State};

use super::ledger::{self, PendingRecord};
use super::terms;
use super::ProxyFetchOrigin;
use crate::rpc::{log_error, CallError, HandlerError, RpcError, RpcErrorKind};
use crate::system::batch::{self, add_to_group, Batcher, Reply};
use crate::system::concurrent;
use crate::system::protocol::{
    into_calls, ExecutorClient, FetchJob, LongJob, LongQueue, OrchestratorClient, QueueRef, Ticket,
    BAD_JOB, BUSY, MAX_JOBS_PER_CALL, MAX_JOBS_PER_ENQUEUE, MISSING_BINDING,
};
use crate::system::{now_ms, wire, Flow, ProxyFetchError, ProxyFetchOptions};

/// In the orchestrated flow the origin's sweep acts this many backstop periods after a start
/// (the orchestrator's backstop acts after one): it queues the request again, which the
/// orchestrator ignores when it has it, and recovers it when a crash cut the start short.
const ORCHESTRATED_DUE_FACTOR: f64 = 2.0;

/// Gives a new job its id, and in the orchestrated flow the orchestrator shard that tracks it.
pub(super) fn name_job(job: &mut FetchJob, id: &str) {
    if job.options.flow == Flow::Orchestrated {
        job.queue = Some(QueueRef {
            binding: job.options.orchestrator_binding.clone(),
            shard: job.options.shard_for(id),
        });
    }
    job.id = id.to_owned();
}

/// Groups jobs into calls: the direct flow's by executor and origin binding (an executor
/// refuses a whole call that names a binding its worker lacks), up to [`MAX_JOBS_PER_CALL`] a
/// call; the orchestrated flow's by orchestrator shard, up to [`MAX_JOBS_PER_ENQUEUE`], but a
/// request with a caller's id alone (the orchestrator may refuse it as another origin's, which
/// must not fail the others). Returns the calls, and for each job (in order) the index of its
/// call.
pub(super) fn batches(jobs: Vec<FetchJob>) -> (Vec<Vec<FetchJob>>, Vec<usize>) {
    into_calls(jobs, |job| match &job.queue {
        // A long-path job is one queue message.
        None if job.options.is_long() => None,
        None => Some((
            (
                false,
                job.options.executor_binding.clone(),
                job.origin.binding.clone(),
            ),
            MAX_JOBS_PER_CALL,
        )),
        Some(_) if job.options.request_id.is_some() => None,
        Some(queue) => Some((
            (true, queue.binding.clone(), queue.shard.clone()),
            MAX_JOBS_PER_ENQUEUE,
        )),
    })
}

/// Tells the orchestrator that tracks a request to stop watching it (its start failed, or the
/// origin cancelled it). If this fails its backstop finds the request settled and drops it.
pub(super) async fn forget_queued(env: &Env, record: &PendingRecord) {
    let Some(queue) = &record.job.queue else {
        return;
    };
    let forgotten = match OrchestratorClient::from_name(env, &queue.binding, &queue.shard) {
        Ok(orchestrator) => orchestrator
            .forget(Ticket::of(&record.job))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = forgotten {
        log_error(&format!(
            "proxy-fetch {}: the orchestrator was not told to forget it: {e}",
            record.job.id
        ));
    }
}

/// How long after a (re)dispatch the origin's sweep looks at a request that has no result (on
/// the long path: after its time in the queue too; a claim moves it to the claimed window's end).
pub(super) fn due_after(options: &ProxyFetchOptions) -> f64 {
    let backstop = options.backstop_after_ms() as f64;
    match options.flow {
        Flow::Direct if options.is_long() => backstop + options.queue_wait_ms as f64,
        Flow::Direct => backstop,
        Flow::Orchestrated => backstop * ORCHESTRATED_DUE_FACTOR,
    }
}

/// Waits before a call the executor answered `busy` is sent again, in turn (ms); after the
/// last, the call's error stands (the origin's alarm sends the jobs again; a `LostOnCrash`
/// start fails with it).
const BUSY_WAITS_MS: [u64; 4] = [250, 500, 1_000, 2_000];

/// Why the executor did not take a call.
#[derive(Clone)]
pub(super) enum NotTaken {
    /// It answered that it took none of the jobs (busy through the origin's tries, a malformed
    /// call), or the call never left.
    Refused(ProxyFetchError),
    /// It took none of them: its worker lacks a binding the jobs name.
    MissingBinding(String),
    /// The call failed without the executor's answer: it may have taken them.
    Unknown(ProxyFetchError),
}

impl NotTaken {
    pub(super) fn into_error(self) -> ProxyFetchError {
        match self {
            NotTaken::Refused(e) | NotTaken::Unknown(e) => e,
            NotTaken::MissingBinding(why) => ProxyFetchError::MissingBinding(why),
        }
    }
}

/// Hands jobs (direct flow, short path: one call, all with the same executor and origin
/// binding) to the executor: `Ok` once it acknowledged them. An executor that is busy (its
/// isolate holds its byte budget) is asked again a few times, after [`BUSY_WAITS_MS`].
pub(super) async fn execute(env: &Env, jobs: Vec<FetchJob>) -> Result<(), NotTaken> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let binding = first.options.executor_binding.as_str();
    let executor = ExecutorClient::from_env(env, binding)
        .map_err(|e| NotTaken::Refused(ProxyFetchError::Dispatch(e)))?;
    let mut packed = None;
    let mut waits = BUSY_WAITS_MS.iter();
    loop {
        let refused = |e| ProxyFetchError::Dispatch(refused_by("executeFetches", e));
        return match wire::execute_fetches(&executor, binding, &jobs, &mut packed).await {
            Ok(()) => Ok(()),
            Err(CallError::Handler(h)) if h.kind == BUSY => match waits.next() {
                Some(ms) => {
                    worker::Delay::from(std::time::Duration::from_millis(*ms)).await;
                    continue;
                }
                None => Err(NotTaken::Refused(refused(CallError::Handler(h)))),
            },
            Err(CallError::Handler(h)) if h.kind == MISSING_BINDING => {
                Err(NotTaken::MissingBinding(h.message))
            }
            Err(CallError::Handler(h)) if h.kind == BAD_JOB => {
                Err(NotTaken::Refused(refused(CallError::Handler(h))))
            }
            // Never sent: encoded badly here, or no such binding or method there.
            Err(CallError::Rpc(e))
                if matches!(
                    e.kind,
                    RpcErrorKind::BadArgument
                        | RpcErrorKind::MissingBinding
                        | RpcErrorKind::NoSuchMethod
                ) =>
            {
                Err(NotTaken::Refused(refused(CallError::Rpc(e))))
            }
            Err(e) => Err(NotTaken::Unknown(refused(e))),
        };
    }
}

/// Hands jobs to the executor ([`execute`]) or to the orchestrator, or the long path's to its
/// queue: `Ok` once acknowledged. One whose executor's worker lacks a binding the jobs name
/// answers [`ProxyFetchError::MissingBinding`].
pub(super) async fn dispatch_all(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    match first.queue.clone() {
        None if first.options.is_long() => send_long(env, jobs).await,
        None => execute(env, jobs).await.map_err(NotTaken::into_error),
        Some(queue) => {
            let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
                .map_err(ProxyFetchError::Dispatch)?;
            match orchestrator.enqueue(jobs).await {
                Err(CallError::Handler(h)) if h.kind == MISSING_BINDING => {
                    Err(ProxyFetchError::MissingBinding(h.message))
                }
                sent => sent.map_err(|e| ProxyFetchError::Dispatch(refused_by("enqueue", e))),
            }
        }
    }
}

/// Jobs of one writer's round waiting for their calls, and where their outcomes go (one per
/// job, in order).
struct Outbound {
    jobs: Vec<FetchJob>,
    reply: Reply<Vec<Result<(), NotTaken>>>,
}

thread_local! {
    /// By origin instance ([`ledger::instance`]), while it has jobs on their way.
    static OUTBOXES: RefCell<Vec<(String, Rc<Batcher<Outbound>>)>> = const { RefCell::new(Vec::new()) };
}

/// Sends the direct flow's jobs to the executor without holding their starts (spawned on the
/// origin's `waitUntil`), in turn with the instance's other calls ([`send_in_turn`]). A job the
/// executor refused (busy through the origin's tries) is noted for the origin's alarm, set to
/// fire now, which sends it again whatever its method (`ledger::unsent`); one refused because
/// its executor's worker lacks its origin's binding, for the alarm to give its handler the
/// refusal as `Rejected`. A job whose call failed without the executor's answer may have reached
/// it: it is left to the backstop at its due time, as if its executor was lost, unless it may be
/// sent twice. Unless the executor was only busy, its terms are forgotten, so the next start
/// asks again (and fails at once if it cannot be reached).
pub(super) fn send_unawaited<O: ProxyFetchOrigin>(origin: &O, jobs: Vec<FetchJob>) {
    let env = origin.env().clone();
    let object = ledger::instance(origin.state());
    let raw: &JsValue = origin.state().as_raw().as_ref();
    let state = State::from(raw.clone().unchecked_into::<DurableObjectState>());
    origin.state().wait_until(async move {
        let named: Vec<(String, String, bool)> = jobs
            .iter()
            .map(|job| {
                let binding = job.options.executor_binding.clone();
                (job.id.clone(), binding, job.may_resend())
            })
            .collect();
        let outcomes = send_in_turn(&env, &object, jobs).await;
        // By executor and error: the ids of the jobs it did not take.
        let mut failed: Vec<((String, String), Vec<String>)> = Vec::new();
        let mut unsent = Vec::new();
        for ((id, binding, resend), outcome) in named.into_iter().zip(outcomes) {
            let Err(not_taken) = outcome else { continue };
            // Noted for the alarm (`Some`), with the refusal its handler gets, if any.
            let again = match &not_taken {
                NotTaken::MissingBinding(why) => {
                    Some(Some(format!("the executor refused it: {why}")))
                }
                NotTaken::Refused(_) => Some(None),
                NotTaken::Unknown(_) if resend => Some(None),
                NotTaken::Unknown(_) => None,
            };
            if let Some(refusal) = again {
                unsent.push((id.clone(), refusal));
            }
            if !matches!(not_taken, NotTaken::Refused(_)) {
                terms::forget(&binding);
            }
            add_to_group(
                &mut failed,
                (binding, not_taken.into_error().to_string()),
                id,
            );
        }
        for ((binding, e), ids) in failed {
            log_error(&format!(
                "proxy-fetch {}: the executor `{binding}` did not take {} ({e}); the origin's \
                 alarm sends again what the executor did not take or may be sent twice, gives a \
                 refusal to the handler, and leaves the rest to the backstop",
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" },
            ));
        }
        if unsent.is_empty() {
            return;
        }
        ledger::unsent(&state, unsent);
        if let Err(e) = ledger::arm(&state, O::OWN_ALARM, now_ms()).await {
            log_error(&format!(
                "proxy-fetch: the origin's alarm was not set for requests the executor did not \
                 take ({e}); their due time sets it"
            ));
        }
    });
}

/// Sends jobs to the executor in turn with the other calls of origin instance `object`, and
/// returns each job's outcome, in order. While a round of its calls is under way, the jobs of
/// later starts wait, and go together in the round after it: fewer, fuller calls, and fewer
/// deliveries back, as results are delivered per call.
async fn send_in_turn(env: &Env, object: &str, jobs: Vec<FetchJob>) -> Vec<Result<(), NotTaken>> {
    let n = jobs.len();
    let outbox = OUTBOXES.with(|o| {
        let mut outboxes = o.borrow_mut();
        match outboxes.iter().find(|(k, _)| k == object) {
            Some((_, outbox)) => outbox.clone(),
            None => {
                let outbox = Rc::new(Batcher::new());
                outboxes.push((object.to_owned(), outbox.clone()));
                outbox
            }
        }
    });
    let (reply, answer) = batch::reply();
    let answered = outbox
        .submit(Outbound { jobs, reply }, answer, |items| {
            send_round(env, items)
        })
        .await;
    if outbox.is_idle() {
        OUTBOXES.with(|o| o.borrow_mut().retain(|(_, b)| !Rc::ptr_eq(b, &outbox)));
    }
    answered.unwrap_or_else(|| {
        let dropped = ProxyFetchError::Dispatch(RpcError::new(
            RpcErrorKind::Remote,
            "executeFetches",
            "its call was dropped unsent",
        ));
        vec![Err(NotTaken::Refused(dropped)); n]
    })
}

/// One round of an outbox: every job queued, in calls side by side ([`batches`]); each item
/// answered with its jobs' outcomes.
async fn send_round(env: &Env, items: Vec<Outbound>) {
    let mut jobs = Vec::new();
    let mut owners = Vec::new();
    let mut replies = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        owners.extend(std::iter::repeat_n(i, item.jobs.len()));
        jobs.extend(item.jobs);
        replies.push(item.reply);
    }
    let (calls, call_of) = batches(jobs);
    let sent = concurrent::all(calls.into_iter().map(|jobs| execute(env, jobs)), usize::MAX).await;
    let mut outcomes: Vec<Vec<Result<(), NotTaken>>> = replies.iter().map(|_| Vec::new()).collect();
    for (owner, call) in owners.into_iter().zip(call_of) {
        if let (Some(outcome), Some(of)) = (sent.get(call), outcomes.get_mut(owner)) {
            of.push(outcome.clone());
        }
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        reply.send(outcome);
    }
}

/// Asks the orchestrator that tracks `job` whether it holds it, by its ticket alone (the job
/// and its body are not shipped): `false` for a job of the direct flow.
pub(super) async fn held_queued(env: &Env, job: &FetchJob) -> Result<bool, ProxyFetchError> {
    let Some(queue) = &job.queue else {
        return Ok(false);
    };
    let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
        .map_err(ProxyFetchError::Dispatch)?;
    orchestrator
        .holds(Ticket::of(job))
        .await
        .map_err(|e| ProxyFetchError::Dispatch(refused_by("holds", e)))
}

/// Sends long-path jobs to their queue, one message each: `Ok` once the queue has them all.
async fn send_long(env: &Env, jobs: Vec<FetchJob>) -> Result<(), ProxyFetchError> {
    for job in jobs {
        let binding = job.options.queue_binding.clone();
        let Some(queue) = LongQueue::from_env(env, &binding) else {
            return Err(long_path_unavailable(&job.options));
        };
        queue.send(&LongJob::of(job)).await.map_err(|e| {
            ProxyFetchError::Dispatch(RpcError::new(
                RpcErrorKind::Remote,
                "Queue.send",
                format!("queue `{binding}`: {e}"),
            ))
        })?;
    }
    Ok(())
}

/// The error of a long-path request whose worker has no queue binding.
pub(super) fn long_path_unavailable(options: &ProxyFetchOptions) -> ProxyFetchError {
    ProxyFetchError::LongPathUnavailable {
        timeout_ms: options.timeout_ms,
        window_ms: crate::system::FETCH_BUDGET_MS,
        binding: options.queue_binding.clone(),
    }
}

/// Asks the orchestrator that tracks `job` after it (the sweep found no result): `true` if it
/// has it, or queued it again (a start a crash cut short, which may be resent); `false` if it
/// does not, and the job may not be sent again.
pub(super) async fn recover(env: &Env, job: FetchJob) -> Result<bool, ProxyFetchError> {
    let Some(queue) = job.queue.clone() else {
        return Ok(false);
    };
    let orchestrator = OrchestratorClient::from_name(env, &queue.binding, &queue.shard)
        .map_err(ProxyFetchError::Dispatch)?;
    orchestrator
        .recover(job)
        .await
        .map_err(|e| ProxyFetchError::Dispatch(refused_by("recover", e)))
}

/// A failed call to the orchestrator as an [`RpcError`]: its handler's error, or the call's.
fn refused_by(method: &'static str, e: CallError<HandlerError>) -> RpcError {
    match e {
        CallError::Rpc(e) => e,
        CallError::Handler(h) => RpcError::new(RpcErrorKind::Remote, method, h.to_string()),
    }
}
