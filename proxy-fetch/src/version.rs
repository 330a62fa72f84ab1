//! The proxy-fetch version a worker is built against, readable from the build output.
//!
//! `proxy-fetch-build` carries the JS runtime (`js/runtime.js`) of its own version and must not
//! pair it with the Rust side of another. wasm-bindgen's JS output names every export, so the
//! version is spelled in an export's name (`.`, `-` and `+` as `_`), where the build tool finds
//! it without running the module.

use wasm_bindgen::prelude::wasm_bindgen;

// One literal for the export and for the test that checks it.
macro_rules! version_export {
    ($name:tt) => {
        #[cfg(test)]
        const MARKER: &str = $name;

        /// Returns the version; exported for its name (see the module docs).
        #[wasm_bindgen(js_name = $name)]
        pub fn version() -> String {
            env!("CARGO_PKG_VERSION").to_owned()
        }
    };
}

version_export!("__pf__version__0_1_0");

#[cfg(test)]
mod tests {
    #[test]
    fn marker_export_spells_the_crate_version() {
        let expected = format!(
            "__pf__version__{}",
            env!("CARGO_PKG_VERSION").replace(['.', '-', '+'], "_")
        );
        assert_eq!(
            super::MARKER,
            expected,
            "update js_name in version.rs with the version"
        );
    }
}
