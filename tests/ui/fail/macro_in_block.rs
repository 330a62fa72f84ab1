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

macro_rules! more_methods {
    () => {
        pub async fn status(&self) -> Result<(), HandlerError> {
            Ok(())
        }
    };
}

#[entrypoint]
impl Executor {
    pub async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    more_methods!();
}

fn main() {}
