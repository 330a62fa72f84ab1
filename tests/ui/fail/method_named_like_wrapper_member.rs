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
    pub async fn rust(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    pub async fn inner(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    #[rpc(name = "rustInstance")]
    pub async fn instance(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    pub async fn env(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
