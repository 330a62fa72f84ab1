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
    async fn background(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    #[rpc(name = "other")]
    fn helper(&self) -> u32 {
        1
    }

    pub async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
