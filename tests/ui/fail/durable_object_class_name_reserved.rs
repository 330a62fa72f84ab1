#![allow(unused_imports, dead_code)]
use proxy_fetch::rpc::HandlerError;
use proxy_fetch::entrypoint;
use worker::*;

// proxy-fetch's own queue Durable Object has this name.
#[durable_object]
pub struct FetchOrchestrator {
    state: State,
}

impl DurableObject for FetchOrchestrator {
    fn new(state: State, _env: Env) -> Self {
        FetchOrchestrator { state }
    }
    async fn fetch(&self, _req: Request) -> Result<Response> {
        Response::ok("mine")
    }
}

#[entrypoint(durable_object)]
impl FetchOrchestrator {
    pub async fn run(&self) -> std::result::Result<(), HandlerError> {
        Ok(())
    }
}

fn main() {}
