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

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Unused;

#[entrypoint]
impl Executor {
    pub async fn copy(&self) -> Result<Vec<Self>, HandlerError> {
        Ok(vec![])
    }
}

fn main() {}
