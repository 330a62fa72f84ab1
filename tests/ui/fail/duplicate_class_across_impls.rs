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

mod other {
    use super::*;

    pub struct Other;
    impl WorkerEntrypoint for Other {
        fn new(_env: Env, _ctx: Context) -> Self {
            Other
        }
    }

    // A second entrypoint class called `Jobs`.
    #[entrypoint(name = "Jobs")]
    impl Other {
        pub async fn walk(&self) -> Result<(), HandlerError> {
            Ok(())
        }
    }
}

#[entrypoint(name = "Jobs")]
impl Executor {
    pub async fn run(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
