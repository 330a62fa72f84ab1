#![allow(unused_imports, dead_code)]
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use worker::{Context, Env};

pub struct Executor;
impl WorkerEntrypoint for Executor {
    fn new(_env: Env, _ctx: Context) -> Self {
        Executor
    }
}

#[entrypoint]
impl Executor {
    // Not `pub`: local helpers, so nothing would be exported.
    async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
