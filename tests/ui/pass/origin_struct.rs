//! `#[origin]` with a field beside `State` and `Env`: the constructor sets it to its default.
use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{entrypoint, origin, Continuation, FetchResult, ProxyFetchOptions};
use std::cell::Cell;
use worker::{Env, State};

#[origin]
pub struct Counter {
    env: Env,
    started: Cell<u32>,
    storage_state: State,
}

#[entrypoint(durable_object, origin)]
impl Counter {
    pub async fn start(&self, url: String) -> Result<String, HandlerError> {
        self.started.set(self.started.get() + 1);
        let continuation = Continuation::new(CounterClient::DONE, self.started.get());
        Ok(
            proxy_fetch::proxy_fetch(self, url, continuation, &ProxyFetchOptions::default())
                .await?,
        )
    }

    pub async fn started(&self) -> Result<u32, HandlerError> {
        Ok(self.started.get())
    }

    async fn done(&self, _result: FetchResult, _nth: u32) -> Result<(), HandlerError> {
        let _ = (&self.env, &self.storage_state);
        Ok(())
    }
}

fn main() {}
