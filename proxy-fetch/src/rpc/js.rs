//! JS properties read (and set) from Rust by name. Each name is made a JS string once per isolate: made
//! anew, it is decoded from Wasm memory at every read, and the hot paths (every Durable Object
//! call, every ledger operation, every fetch) read a few each (in the bench's burst, about 2%
//! of the CPU for the fetch's names alone before they were kept).

use std::cell::RefCell;

use wasm_bindgen::JsValue;

/// `key` as a JS string, made once per isolate.
pub(crate) fn name(key: &'static str) -> JsValue {
    thread_local! {
        static NAMES: RefCell<Vec<(&'static str, JsValue)>> = const { RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        // The same literal is (nearly always) the same address: compared by that first.
        let same_literal = |(name, _): &&(&str, JsValue)| std::ptr::eq(*name, key);
        let same_text = |(name, _): &&(&str, JsValue)| *name == key;
        if let Some((_, name)) = names
            .iter()
            .find(same_literal)
            .or_else(|| names.iter().find(same_text))
        {
            return name.clone();
        }
        let name = JsValue::from_str(key);
        names.push((key, name.clone()));
        name
    })
}

/// Reads property `key` of `target`. (The name is taken out of the isolate's list before the
/// read: a getter may run JS, which may call back into here.)
pub(crate) fn get(target: &JsValue, key: &'static str) -> Result<JsValue, JsValue> {
    js_sys::Reflect::get(target, &name(key))
}
