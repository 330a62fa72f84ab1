#![allow(unused_imports, dead_code)]
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::HandlerError;

#[entrypoint(durable_object, origin)]
pub trait RemoteInbox {
    async fn check(&self, city: String) -> Result<String, HandlerError>;
}

fn main() {}
