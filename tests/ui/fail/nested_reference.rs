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
    pub async fn names(&self, list: Vec<&'static str>) -> Result<Option<&'static str>, HandlerError> {
        Ok(list.first().copied())
    }
}

fn main() {}
