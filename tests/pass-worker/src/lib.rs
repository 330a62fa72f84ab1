//! Every `tests/ui/pass` case as a module of one worker, built to wasm and loaded in workerd by
//! tests/workerd/pass.test.mjs: a shape that compiles must also load and answer. The cases
//! export distinct JS names, as the modules of one worker must (the macro refuses duplicates).
#![allow(dead_code)]

#[path = "../../ui/pass/all_shapes.rs"]
pub mod all_shapes;
#[path = "../../ui/pass/bytes.rs"]
pub mod bytes;
#[path = "../../ui/pass/names_and_helpers.rs"]
pub mod names_and_helpers;
#[path = "../../ui/pass/origin_struct.rs"]
pub mod origin_struct;
#[rustfmt::skip] // the README example, verbatim
#[path = "../../ui/pass/readme_origin.rs"]
pub mod readme_origin;

use worker::{event, Context, Env, Request, Response, Result};

/// Runs the Rust callers of a case (its generated clients) against this same worker.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let outcome = match req.path().as_str() {
        "/all_shapes" => all_shapes::callers(&env).await,
        "/names_and_helpers" => names_and_helpers::callers(&env).await,
        _ => return Response::error("not found", 404),
    };
    match outcome {
        Ok(text) => Response::ok(text),
        Err(e) => Response::error(e.to_string(), 500),
    }
}
