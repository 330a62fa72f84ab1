#![allow(unused_imports, dead_code)]
use proxy_fetch::origin;

#[origin]
pub enum Inbox {
    Empty,
}

fn main() {}
