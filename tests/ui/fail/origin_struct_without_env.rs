#![allow(unused_imports, dead_code)]
use proxy_fetch::origin;
use worker::State;

#[origin]
pub struct Inbox {
    state: State,
    count: u32,
}

fn main() {}
