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
    #[wait_until]
    #[wait_until]
    pub async fn execute(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    #[rpc(name = "a")]
    #[rpc(name = "b")]
    pub async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
