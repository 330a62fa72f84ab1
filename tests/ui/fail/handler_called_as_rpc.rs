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

// A continuation handler is not an RPC method: there is no client method to call.
#[allow(dead_code)]
async fn caller(env: &Env, result: FetchResult) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let inbox = InboxClient::from_name(env, "INBOX", "a")?;
    inbox.start().await?;
    inbox.on_response(result, ()).await?;
    Ok(())
}

#[entrypoint(durable_object, origin)]
impl Inbox {
    pub async fn start(&self) -> std::result::Result<(), HandlerError> {
        Ok(())
    }

    async fn on_response(&self, result: FetchResult, data: ()) -> std::result::Result<(), HandlerError> {
        let _ = (result, data);
        Ok(())
    }
}

fn main() {}
