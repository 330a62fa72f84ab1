#![allow(unused_imports, dead_code)]
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use worker::{Context, Env};

pub struct Wrapper<T>(T);

impl WorkerEntrypoint for Wrapper<u32> {
    fn new(_env: Env, _ctx: Context) -> Self {
        Wrapper(0)
    }
}

#[entrypoint]
impl Wrapper<u32> {
    pub async fn health(&self) -> Result<u32, HandlerError> {
        Ok(self.0)
    }
}

fn main() {}
