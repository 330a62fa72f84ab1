#![allow(unused_imports)]
use proxy_fetch::rpc::HandlerError;
use proxy_fetch::{entrypoint, origin, Continuation, FetchResult, ProxyFetchOptions};
use worker::*;

#[origin]
pub struct Inbox {
    state: State,
    env: Env,
}

#[entrypoint(durable_object, origin)]
impl Inbox {
    pub async fn check(&self, city: String) -> std::result::Result<String, HandlerError> {
        let continuation = Continuation::new(InboxClient::ON_RESPONSE, city);
        Ok(proxy_fetch::proxy_fetch(self, "https://api.example.com/", continuation, &ProxyFetchOptions::default()).await?)
    }

    // Meant as the continuation handler, but its first argument is the data, not the
    // `FetchResult`: it is a local helper, and there is no `InboxClient::ON_RESPONSE`.
    async fn on_response(&self, city: String, result: FetchResult) -> std::result::Result<(), HandlerError> {
        let _ = (city, result);
        Ok(())
    }
}

fn main() {}
