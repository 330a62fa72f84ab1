#![allow(unused_imports, dead_code)]
use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{entrypoint, Continuation, FetchResult, ProxyFetchOptions, ProxyFetchOrigin};
use worker::*;

#[durable_object]
pub struct Inbox {
    state: State,
    env: Env,
}

impl DurableObject for Inbox {
    fn new(state: State, env: Env) -> Self {
        Inbox { state, env }
    }
    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok("inbox")
    }
}

impl ProxyFetchOrigin for Inbox {
    fn state(&self) -> &State {
        &self.state
    }
    fn env(&self) -> &Env {
        &self.env
    }
}

#[entrypoint(durable_object, origin)]
impl Inbox {
    async fn on_response(&self, result: FetchResult) -> std::result::Result<(), HandlerError> {
        let _ = result;
        Ok(())
    }
}

fn main() {}
