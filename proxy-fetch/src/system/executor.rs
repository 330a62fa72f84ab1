//! FetchExecutor: the Worker entrypoint that does the waiting, a host of [`super::fetch`]. The
//! caller's call returns as soon as the jobs are handed to `ctx.waitUntil`; the fetches, their
//! retries, the deliveries and the completion notices run after that acknowledgement, within
//! [`INVOCATION_BUDGET_MS`](super::options::INVOCATION_BUDGET_MS) (production cancels
//! background work 30 s after the call returned).

use serde::{Deserialize, Serialize};
use worker::{Context, Env};

use super::options::Budget;
use super::policy::{ExecutorLimits, ExecutorPolicy, POLICY_VAR};
use super::protocol::{ExecutorTerms, FetchJob, Packed, BAD_JOB, NO_POLICY};
use super::{fetch, now_ms, refusal, wire};
use crate::entrypoint;
use crate::rpc::{HandlerError, WorkerEntrypoint};

/// Served as the named entrypoint `FetchExecutorEntrypoint`: bind it with
/// `[[services]] binding = "FETCH_EXECUTOR", service = "<this worker>", entrypoint = "FetchExecutorEntrypoint"`.
/// It fetches only what its worker's `PROXY_FETCH_ALLOW` var allows (see [`ExecutorPolicy`]).
pub struct FetchExecutor {
    env: Env,
    ctx: Context,
}

impl WorkerEntrypoint for FetchExecutor {
    fn new(env: Env, ctx: Context) -> Self {
        FetchExecutor { env, ctx }
    }
}

/// What `health` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorHealth {
    /// Always `true`: the executor answered.
    pub ok: bool,
    /// proxy-fetch's version in the executor's worker.
    pub version: String,
    /// Whether `PROXY_FETCH_ALLOW` and the limit vars (`PROXY_FETCH_MAX_*`) are readable.
    pub policy: Result<(), String>,
    /// Calls and jobs refused in this isolate since it started (each is also logged).
    pub refused: u32,
    /// Origin or orchestrator bindings that refused calls named and this worker lacks (or has
    /// of another kind), since the isolate started: bind them in the executor's worker.
    pub missing_bindings: Vec<String>,
    /// Bytes of bodies held in flight in this isolate now (`PROXY_FETCH_MAX_INFLIGHT_BYTES`
    /// bounds it).
    pub in_flight_bytes: u64,
}

#[entrypoint(name = "FetchExecutorEntrypoint")]
impl FetchExecutor {
    /// Fetches each job's request (with retries), delivers its result to its origin, then
    /// tells the orchestrator (orchestrated flow) the request is done. Answered as soon as the
    /// call is checked; the work runs under `ctx.waitUntil`, the jobs side by side. A call of
    /// more than [`MAX_JOBS_PER_CALL`](super::protocol::MAX_JOBS_PER_CALL) jobs (the
    /// connections one invocation may hold open), one naming a binding this worker lacks, or
    /// one that does not fit the isolate's byte budget now is refused with a typed error
    /// (`bad_job`, `missing_binding`, `busy`), logged and counted; nothing of it is fetched.
    pub async fn execute_fetches(&self, jobs: Vec<FetchJob>) -> Result<(), HandlerError> {
        self.take_call("FetchExecutor.executeFetches", jobs)
    }

    /// [`execute_fetches`](Self::execute_fetches) with each job [`Packed`] (its JSON text, its
    /// body beside it): how origins of this version send jobs. A call with a job that does not
    /// read as one is refused whole (`bad_job`), logged and counted; nothing of it is fetched.
    pub async fn execute_fetches_packed(&self, jobs: Vec<Packed>) -> Result<(), HandlerError> {
        const METHOD: &str = "FetchExecutor.executeFetchesPacked";
        let count = jobs.len();
        let refuse = |why: String| {
            refusal::refused(METHOD, &format!("a call of {count} jobs"), &why);
            HandlerError::new(BAD_JOB, why)
        };
        if let Some(why) = fetch::too_many_jobs(count) {
            // Refused before any is parsed.
            return Err(refuse(why));
        }
        wire::check_texts(jobs.iter().map(|j| j.json.as_str())).map_err(refuse)?;
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(i, packed)| packed.into_job().map_err(|e| format!("job [{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refuse)?;
        self.take_call(METHOD, jobs)
    }

    /// What this executor takes (its worker's `PROXY_FETCH_ALLOW` and Durable Object
    /// bindings), for origins to refuse at the start what it would refuse.
    pub async fn terms(&self) -> Result<ExecutorTerms, HandlerError> {
        match self.env.var(POLICY_VAR) {
            Ok(spec) => Ok(ExecutorTerms {
                allow: spec.to_string(),
                namespaces: fetch::namespaces(&self.env),
            }),
            Err(_) => Err(HandlerError::new(
                NO_POLICY,
                ExecutorPolicy::from_env(&self.env)
                    .err()
                    .unwrap_or_default(),
            )),
        }
    }

    /// Answers at once: for checking the binding and the policy.
    pub async fn health(&self) -> Result<ExecutorHealth, HandlerError> {
        Ok(ExecutorHealth {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
            policy: ExecutorPolicy::from_env(&self.env)
                .and(ExecutorLimits::from_env(&self.env))
                .map(|_| ()),
            refused: refusal::count(),
            missing_bindings: fetch::missing_bindings(),
            in_flight_bytes: fetch::in_flight_bytes(),
        })
    }
}

impl FetchExecutor {
    /// Checks a call of `method` ([`fetch::admit_call`]) and hands its jobs to `ctx.waitUntil`.
    fn take_call(&self, method: &str, jobs: Vec<FetchJob>) -> Result<(), HandlerError> {
        let held = fetch::admit_call(&self.env, method, &jobs)?;
        let env = self.env.clone();
        let started = now_ms();
        self.ctx.wait_until(async move {
            fetch::run(
                &env,
                "FetchExecutor",
                jobs,
                held,
                started,
                &Budget::WAIT_UNTIL,
            )
            .await;
        });
        Ok(())
    }
}
