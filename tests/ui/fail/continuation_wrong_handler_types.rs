#![allow(unused_imports)]
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
    pub async fn start(&self) -> std::result::Result<(), HandlerError> {
        // The handler takes a u32 as its data, not a String.
        let continuation = Continuation::new(InboxClient::ON_COUNT, String::from("x"));
        proxy_fetch::proxy_fetch(self, "https://api.example.com/", continuation, &ProxyFetchOptions::default()).await?;
        Ok(())
    }

    pub async fn on_count(&self, result: FetchResult, count: u32) -> std::result::Result<(), HandlerError> {
        let _ = (result, count);
        Ok(())
    }
}

fn main() {}
