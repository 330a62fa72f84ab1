//! Durable Object storage as the origin and the orchestrator both use it: the entries under a
//! key prefix read a page at a time, and an alarm that only ever moves earlier.

use js_sys::Array;
use wasm_bindgen::JsValue;
use worker::{ListOptions, Storage};

use super::now_ms;

/// Entries read per page.
pub(crate) const PAGE: usize = 256;

/// The entries under a key prefix, a page at a time, in key order, each page read when asked
/// for (an entry written meanwhile past the last key read is seen).
pub(crate) struct Pages {
    prefix: &'static str,
    /// The last key read.
    after: Option<String>,
    done: bool,
}

impl Pages {
    pub fn new(prefix: &'static str) -> Self {
        Pages {
            prefix,
            after: None,
            done: false,
        }
    }

    /// The next page, each entry's key and stored value; `None` once all were read.
    pub async fn next(
        &mut self,
        storage: &Storage,
    ) -> worker::Result<Option<Vec<(String, JsValue)>>> {
        if self.done {
            return Ok(None);
        }
        let mut options = ListOptions::new().prefix(self.prefix).limit(PAGE);
        let start;
        if let Some(after) = &self.after {
            // `start` is inclusive: begin just past the last key read.
            start = format!("{after}\u{0}");
            options = options.start(&start);
        }
        let map = storage.list_with_options(options).await?;
        let mut page = Vec::new();
        for entry in map.entries() {
            let pair: Array = entry?.into();
            if let Some(key) = pair.get(0).as_string() {
                page.push((key, pair.get(1)));
            }
        }
        self.done = page.len() < PAGE;
        self.after = page
            .last()
            .map(|(key, _)| key.clone())
            .or(self.after.take());
        Ok(Some(page))
    }
}

/// Makes sure the object's alarm fires no later than `at`. `known` is the alarm time the
/// caller last set or read (`None`: read it). Returns the alarm time set now.
pub(crate) async fn arm(storage: &Storage, known: Option<f64>, at: f64) -> worker::Result<f64> {
    let current = match known {
        Some(t) => Some(t),
        None => storage.get_alarm().await?.map(|t| t as f64),
    };
    match current {
        Some(t) if t <= at => Ok(t),
        _ => {
            // An integer is an offset from now for workers-rs, not a timestamp.
            storage.set_alarm((at - now_ms()).max(0.0) as i64).await?;
            Ok(at)
        }
    }
}
