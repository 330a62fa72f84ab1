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

pub struct Other;
impl WorkerEntrypoint for Other {
    fn new(_env: Env, _ctx: Context) -> Self {
        Other
    }
}

// `wasm` is a binding of the generated main module.
#[entrypoint(name = "wasm")]
impl Other {
    pub async fn run(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[entrypoint(name = "class")]
impl Executor {
    pub async fn run(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
