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

mod admin {
    use super::*;

    pub struct Admin;
    impl WorkerEntrypoint for Admin {
        fn new(_env: Env, _ctx: Context) -> Self {
            Admin
        }
    }

    // The default entrypoint's `version` again, from another module.
    #[entrypoint]
    impl Admin {
        pub async fn version(&self) -> Result<String, HandlerError> {
            Ok("2".into())
        }
    }
}

#[entrypoint]
impl Executor {
    pub async fn version(&self) -> Result<String, HandlerError> {
        Ok("1".into())
    }
}

fn main() {}
