//! One mistake in an #[entrypoint] block is one error: the client still exists (with the
//! methods' signatures), so the code that uses it adds no errors of its own.
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
    // The mistake: not async.
    pub fn health(&self) -> Result<String, HandlerError> {
        Ok("ok".into())
    }

    pub async fn add(&self, a: u32, b: u32) -> Result<u32, HandlerError> {
        Ok(a + b)
    }
}

async fn caller(env: &Env) -> Result<(), Box<dyn std::error::Error>> {
    let executor = ExecutorClient::from_env(env, "EXECUTOR")?;
    let _: String = executor.health().await?;
    let _: u32 = executor.add(1, 2).await?;
    let _ = ExecutorClient::ADD;
    Ok(())
}

fn main() {}
