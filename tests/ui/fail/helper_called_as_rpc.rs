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

#[entrypoint(name = "ExecutorEntrypoint")]
impl Executor {
    pub async fn health(&self) -> Result<(), HandlerError> {
        Ok(())
    }

    // Not `pub`: a local helper, not an RPC method; the client has no `reset`.
    async fn reset(&self, keep: u32) -> Result<u32, HandlerError> {
        Ok(keep)
    }
}

async fn caller(env: &Env) -> Result<(), Box<dyn std::error::Error>> {
    let executor = ExecutorClient::from_env(env, "EXECUTOR")?;
    executor.health().await?;
    let kept = executor.reset(3).await?;
    let _ = kept;
    Ok(())
}

fn main() {}
