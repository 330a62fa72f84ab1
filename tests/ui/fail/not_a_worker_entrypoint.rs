#![allow(unused_imports)]
use proxy_fetch::entrypoint;
use proxy_fetch::rpc::{HandlerError, WorkerEntrypoint};
use worker::{Context, Env};

pub struct Executor;
impl WorkerEntrypoint for Executor {
    fn new(_env: Env, _ctx: Context) -> Self {
        Executor
    }
}

pub struct Plain;

#[entrypoint(name = "PlainEntrypoint")]
impl Plain {
    pub async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
