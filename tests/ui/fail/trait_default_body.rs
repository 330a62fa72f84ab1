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
pub trait Remote {
    async fn add(&self, a: i32, b: i32) -> Result<i32, HandlerError> {
        let _ = (a, b);
        Ok(0)
    }
}

fn main() {}
