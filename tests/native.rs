//! Generated clients called in process, on the host: code that uses stubs is unit-testable
//! with `cargo test`, and values still cross serde as they would cross RPC.

use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{CallError, HandlerError, RpcErrorKind, WorkerEntrypoint};
use proxy_fetch_tests::block_on;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use worker::{Context, Env};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub url: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Recorder {
    seen: RefCell<Vec<Job>>,
}

impl WorkerEntrypoint for Recorder {
    fn new(_env: Env, _ctx: Context) -> Self {
        Recorder::default()
    }
}

#[entrypoint(name = "RecorderEntrypoint")]
impl Recorder {
    #[wait_until]
    pub async fn record(&self, job: Job) -> Result<(), HandlerError> {
        if job.url.is_empty() {
            return Err(HandlerError::new("empty_url", "no url"));
        }
        self.seen.borrow_mut().push(job);
        Ok(())
    }

    pub async fn count(&self, offset: u32) -> Result<u32, HandlerError> {
        Ok(self.seen.borrow().len() as u32 + offset)
    }

    pub async fn last(&self) -> Result<Option<Job>, HandlerError> {
        Ok(self.seen.borrow().last().cloned())
    }

    pub async fn refuse(&self, why: String) -> Result<(), HandlerError> {
        Err(HandlerError::new("refused", why))
    }

    pub async fn not_a_number(&self) -> Result<f64, HandlerError> {
        Ok(f64::NAN)
    }
}

fn job(url: &str) -> Job {
    Job {
        url: url.into(),
        body: vec![0, 1, 254, 255],
        headers: BTreeMap::from([("accept".into(), "*/*".into())]),
    }
}

#[test]
fn local_client_calls_the_implementation_through_serde() {
    let recorder = Rc::new(Recorder::default());
    let client = RecorderClient::local(recorder.clone());
    assert!(client.stub().is_none());
    block_on(client.record(job("http://127.0.0.1/a"))).unwrap();
    assert_eq!(block_on(client.count(10)).unwrap(), 11);
    assert_eq!(
        block_on(client.last()).unwrap(),
        Some(job("http://127.0.0.1/a"))
    );
}

#[test]
fn handler_errors_come_back_typed() {
    let client = RecorderClient::local(Rc::new(Recorder::default()));
    match block_on(client.refuse("busy".into())) {
        Err(CallError::Handler(e)) => assert_eq!(e, HandlerError::new("refused", "busy")),
        other => panic!("expected a handler error, got {other:?}"),
    }
}

#[test]
fn wait_until_errors_are_not_the_callers() {
    let recorder = Rc::new(Recorder::default());
    let client = RecorderClient::local(recorder.clone());
    // Acknowledged like in the runtime; the failure is logged by the callee, not returned.
    block_on(client.record(job(""))).unwrap();
    assert_eq!(recorder.seen.borrow().len(), 0);
}

#[test]
fn a_value_serde_cannot_carry_is_a_bad_return() {
    let client = RecorderClient::local(Rc::new(Recorder::default()));
    // JSON has no NaN (it becomes null): the local round trip reports an undecodable result.
    match block_on(client.not_a_number()) {
        Err(CallError::Rpc(e)) => {
            assert_eq!(e.kind, RpcErrorKind::BadReturn);
            assert_eq!(e.method, "notANumber");
        }
        other => panic!("expected BadReturn, got {other:?}"),
    }
}

#[allow(dead_code)]
#[path = "ui/pass/names_and_helpers.rs"]
mod names_and_helpers;

#[test]
fn any_argument_or_method_name_works_in_process() {
    use names_and_helpers::{Echo, NamesClient};
    let client = names_and_helpers::local_client();
    let echo = block_on(client.echo("e".into(), "c".into(), 1, 2, 3, 4)).unwrap();
    let expected = Echo {
        env: "e".into(),
        ctx: "c".into(),
        args: 1,
        this: 2,
        stub: 3,
    };
    assert_eq!(echo, expected);
    assert_eq!(block_on(client.stub(41)).unwrap(), 42);
    assert_eq!(block_on(client.local()).unwrap(), "local");
    assert_eq!(block_on(client.r#type(21)).unwrap(), 42);
    assert_eq!(NamesClient::TYPE.js_name(), "type");
    assert_eq!(NamesClient::WITH_CFG_ATTR.js_name(), "withCfgAttr");
}
