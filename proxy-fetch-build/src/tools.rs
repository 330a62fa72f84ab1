//! The programs the build runs: cargo, the wasm-bindgen CLI, wasm-opt.
//!
//! The wasm-bindgen CLI must be of exactly the version of the wasm-bindgen library in the
//! crate's `Cargo.lock` (its output and the library's generated glue are one protocol). This
//! tool does not link wasm-bindgen's CLI library itself, because that would fix one version
//! when the tool is compiled; it uses an existing CLI of the right version or installs that
//! version once with `cargo install` into a per-user cache keyed by version, the folder
//! proxy-fetch's `tools/setup.sh` uses too, so either one's install serves both.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// wasm-opt's flags for what rustc's wasm32 output uses.
pub const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
    "--enable-exception-handling",
];

/// The cargo that runs this tool (`CARGO` under `cargo run`), else cargo on PATH.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs a command with inherited output; a failure is an error naming `what`.
pub fn run(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {what} ({:?}): {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Refuses early, with the fix, when rustc has no std for wasm32 (unless cargo builds std
/// itself: `-Zbuild-std` among the cargo arguments, or `CARGO_UNSTABLE_BUILD_STD`).
pub fn check_wasm32_std(crate_dir: &Path, cargo_args: &[OsString]) -> Result<()> {
    if std::env::var_os("CARGO_UNSTABLE_BUILD_STD").is_some()
        || cargo_args
            .iter()
            .any(|a| a.to_string_lossy().contains("build-std"))
    {
        return Ok(());
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .current_dir(crate_dir)
        .args([
            "--print",
            "target-libdir",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = std::fs::read_dir(&libdir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
    });
    if has_std {
        Ok(())
    } else {
        Err("rustc has no standard library for wasm32-unknown-unknown: \
             run `rustup target add wasm32-unknown-unknown`"
            .to_owned())
    }
}

/// Where proxy-fetch keeps tools: `$PROXY_FETCH_CACHE`, else `$XDG_CACHE_HOME/proxy-fetch`,
/// else `~/.cache/proxy-fetch` (as `tools/setup.sh`).
fn cache_dir() -> Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("PROXY_FETCH_CACHE") {
        return Ok(dir.into());
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("proxy-fetch"));
    }
    non_empty("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("proxy-fetch"))
        .ok_or_else(|| "no HOME to keep tools in: set PROXY_FETCH_CACHE".to_owned())
}

/// Whether `program --version` prints `wasm-bindgen <version>`.
fn is_wasm_bindgen(program: &OsStr, version: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).trim() == format!("wasm-bindgen {version}")
        })
}

/// A wasm-bindgen CLI of `version`: `$WASM_BINDGEN`, the cache, PATH, or installed into the
/// cache (minutes, once per version).
pub fn wasm_bindgen(crate_dir: &Path, version: &str) -> Result<PathBuf> {
    if let Some(program) = std::env::var_os("WASM_BINDGEN").filter(|v| !v.is_empty()) {
        if is_wasm_bindgen(&program, version) {
            return Ok(program.into());
        }
        eprintln!(
            "proxy-fetch-build: note: WASM_BINDGEN ({}) is not wasm-bindgen {version}, the crate's version; looking further",
            Path::new(&program).display()
        );
    }
    let dir = cache_dir()?
        .join("tools")
        .join(format!("wasm-bindgen-cli-{version}"));
    let cached = dir.join("bin").join("wasm-bindgen");
    if is_wasm_bindgen(cached.as_os_str(), version) {
        return Ok(cached);
    }
    if is_wasm_bindgen(OsStr::new("wasm-bindgen"), version) {
        return Ok("wasm-bindgen".into());
    }

    eprintln!(
        "proxy-fetch-build: installing wasm-bindgen-cli {version} (the crate's wasm-bindgen) into {}; \
         this takes a few minutes, once per version",
        dir.display()
    );
    // Install beside the final folder and move it in whole: an interrupted install leaves no
    // half-installed tool, and two builds installing at once both end up with a good one.
    let staging = crate::sibling(&dir, &format!(".tmp.{}", std::process::id()));
    crate::remove_dir(&staging)?;
    let installed = run(
        Command::new(cargo())
            .current_dir(crate_dir)
            .args(["install", "--quiet", "wasm-bindgen-cli", "--version"])
            .arg(format!("={version}"))
            .arg("--root")
            .arg(&staging),
        "cargo install wasm-bindgen-cli",
    );
    if let Err(e) = installed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("{e} (is crates.io reachable?)"));
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another build got there first; use its install if it is good.
        let _ = std::fs::remove_dir_all(&staging);
    }
    if is_wasm_bindgen(cached.as_os_str(), version) {
        Ok(cached)
    } else {
        Err(format!(
            "{} does not report wasm-bindgen {version}: delete {} and build again",
            cached.display(),
            dir.display()
        ))
    }
}

/// `$WASM_OPT`, else `wasm-opt` on PATH, else none.
pub fn wasm_opt() -> Option<PathBuf> {
    if let Some(program) = std::env::var_os("WASM_OPT").filter(|v| !v.is_empty()) {
        return Some(program.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("wasm-opt"))
        .find(|candidate| candidate.is_file())
}
