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

macro_rules! my_type {
    () => {
        u32
    };
}

#[entrypoint]
impl Executor {
    pub async fn run(&self, value: my_type!()) -> Result<(), HandlerError> {
        let _ = value;
        Ok(())
    }
}

fn main() {}
