#![allow(unused_imports, dead_code)]
use proxy_fetch::origin;
use worker::{Env, State};

#[origin]
pub struct Inbox {
    state: State,
    backup: worker::State,
    env: Env,
}

fn main() {}
