#![allow(unused_imports)]
use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{entrypoint, FetchResult, ProxyFetchOrigin};
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

// Results arrive through an RPC method that only `origin` generates.
impl ProxyFetchOrigin for Inbox {
    fn state(&self) -> &State {
        &self.state
    }
    fn env(&self) -> &Env {
        &self.env
    }
}

#[entrypoint(durable_object)]
impl Inbox {
    pub async fn on_response(&self, result: FetchResult, data: ()) -> std::result::Result<(), HandlerError> {
        let _ = (result, data);
        Ok(())
    }
}

fn main() {}
