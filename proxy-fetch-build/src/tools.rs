//! The programs the build runs: cargo, the wasm-bindgen CLI, wasm-opt.
//!
//! The wasm-bindgen CLI must be of exactly the version of the wasm-bindgen library in the
//! crate's `Cargo.lock` (its output and the library's generated glue are one protocol). This
//! tool does not link wasm-bindgen's CLI library itself, because that would fix one version
//! when the tool is compiled; it uses an existing CLI of the right version or installs that
//! version once with `cargo install` into a per-user cache keyed by version, the folder
//! proxy-fetch's `tools/setup.sh` uses too, so either one's install serves both. wasm-opt is
//! binaryen's, pinned (npm `binaryen`), installed into the same cache when none is found.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::install::{self, Cancel};
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

/// How `cargo install` builds the wasm-bindgen CLI: only the `wasm-bindgen` binary, and without
/// the default `rustls-tls` feature (TLS serves only `wasm-bindgen-test-runner`'s WebDriver
/// client; leaving it out skips compiling rustls and ring). `tools/setup.sh` uses the same.
pub const WASM_BINDGEN_INSTALL_ARGS: &[&str] = &["--bin", "wasm-bindgen", "--no-default-features"];

/// A wasm-bindgen CLI of `version`: `$WASM_BINDGEN`, the cache, PATH, or installed into the
/// cache (minutes, once per version; one install at a time, with progress: install.rs).
pub fn wasm_bindgen(crate_dir: &Path, version: &str, cancel: &Cancel) -> Result<PathBuf> {
    if let Some(program) = std::env::var_os("WASM_BINDGEN").filter(|v| !v.is_empty()) {
        if is_wasm_bindgen(&program, version) {
            return Ok(program.into());
        }
        install::say(&format!(
            "note: WASM_BINDGEN ({}) is not wasm-bindgen {version}, the crate's version; looking further",
            Path::new(&program).display()
        ));
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

    let what = format!("wasm-bindgen-cli {version}");
    let _lock = install::lock(&dir, &what, crate_dir, install::WAIT_FOR_OTHERS, cancel)?;
    // Whoever held the lock may have installed it meanwhile.
    if is_wasm_bindgen(cached.as_os_str(), version) {
        return Ok(cached);
    }
    if dir.exists() {
        install::say(&format!(
            "{} does not report wasm-bindgen {version}: installing it again",
            cached.display()
        ));
        crate::remove_dir(&dir)?;
    }
    install::say(&format!(
        "installing {what} (the crate's wasm-bindgen; the CLI must be of the same version) into {} \
         with cargo install: a few minutes of compiling, once per version; the crate builds meanwhile",
        dir.display()
    ));
    let staging = install::staging(&dir);
    let target = crate::sibling(&staging, "-target");
    let mut command = Command::new(cargo());
    command
        .current_dir(crate_dir)
        .args(["install", "wasm-bindgen-cli", "--version"])
        .arg(format!("={version}"))
        .args(WASM_BINDGEN_INSTALL_ARGS)
        .arg("--root")
        .arg(&staging)
        // A target folder of its own: `CARGO_TARGET_DIR` (or a configured target-dir) would
        // make the install wait for the lock of the crate's build, which runs meanwhile.
        .arg("--target-dir")
        .arg(&target);
    let installed = install::run(command, &what, &staging, &dir, INSTALL_DEADLINE, cancel);
    let _ = std::fs::remove_dir_all(&target);
    installed.map_err(|e| {
        format!(
            "{e}\n(cargo install needs crates.io; or set WASM_BINDGEN to a wasm-bindgen {version})"
        )
    })?;
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

/// The longest an install may run (a cold wasm-bindgen CLI on 2 busy cores: about 11 minutes).
const INSTALL_DEADLINE: Duration = Duration::from_secs(40 * 60);

/// The binaryen whose wasm-opt the build installs when it finds none as new: the npm package
/// `binaryen` of this version, which workers-rs' worker-build also uses.
pub const BINARYEN_VERSION: &str = "132.0.0";

/// The binaryen major version of `program --version` ("wasm-opt version 132 (version_132)").
fn wasm_opt_version(program: &OsStr) -> Option<u32> {
    let out = Command::new(program)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    parse_wasm_opt_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wasm_opt_version(text: &str) -> Option<u32> {
    let rest = &text[text.find("version")? + "version".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn binaryen_major() -> u32 {
    BINARYEN_VERSION
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0)
}

/// The wasm-opt to run: `$WASM_OPT`; else `wasm-opt` on PATH when it is binaryen
/// [`BINARYEN_VERSION`] or newer (older ones, such as Debian's 108, cannot parse the module);
/// else the pinned one in the cache, installed there with npm when missing. None (with a note
/// saying why) when there is none and none can be installed: the build goes on unoptimized.
pub fn wasm_opt(crate_dir: &Path, cancel: &Cancel) -> Option<PathBuf> {
    if let Some(program) = std::env::var_os("WASM_OPT").filter(|v| !v.is_empty()) {
        return Some(program.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("wasm-opt"))
            .find(|candidate| candidate.is_file())
    });
    let pinned = binaryen_major();
    if let Some(program) = on_path {
        match wasm_opt_version(program.as_os_str()) {
            Some(v) if v >= pinned => return Some(program),
            found => install::say(&format!(
                "note: {} is {}, older than binaryen {pinned}: using binaryen {BINARYEN_VERSION} from the cache instead",
                program.display(),
                found.map_or("of an unknown version".to_owned(), |v| format!("binaryen {v}"))
            )),
        }
    }
    match pinned_wasm_opt(crate_dir, cancel) {
        Ok(program) => Some(program),
        Err(why) => {
            install::say(&format!(
                "note: no wasm-opt, so the wasm is not size-optimized (about 30% larger): {why}"
            ));
            None
        }
    }
}

/// `<cache>/tools/binaryen-<BINARYEN_VERSION>/node_modules/.bin/wasm-opt`, installed with
/// `npm install binaryen@<BINARYEN_VERSION>` when missing.
fn pinned_wasm_opt(crate_dir: &Path, cancel: &Cancel) -> Result<PathBuf> {
    let dir = cache_dir()?
        .join("tools")
        .join(format!("binaryen-{BINARYEN_VERSION}"));
    let program = dir.join("node_modules").join(".bin").join("wasm-opt");
    let pinned = Some(binaryen_major());
    if wasm_opt_version(program.as_os_str()) == pinned {
        return Ok(program);
    }
    let npm = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("npm"))
            .find(|candidate| candidate.is_file())
    });
    let Some(npm) = npm else {
        return Err(format!(
            "npm is not on PATH to install binaryen {BINARYEN_VERSION} with; install Node.js with \
             npm, or set WASM_OPT to a wasm-opt of binaryen {} or newer (or pass --no-opt to skip it quietly)",
            binaryen_major()
        ));
    };
    let what = format!("wasm-opt (npm binaryen@{BINARYEN_VERSION})");
    let _lock = install::lock(&dir, &what, crate_dir, install::WAIT_FOR_OTHERS, cancel)?;
    if wasm_opt_version(program.as_os_str()) == pinned {
        return Ok(program);
    }
    crate::remove_dir(&dir)?;
    install::say(&format!("installing {what} into {}", dir.display()));
    let staging = install::staging(&dir);
    let mut command = Command::new(npm);
    command
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&staging)
        .arg(format!("binaryen@{BINARYEN_VERSION}"));
    install::run(command, &what, &staging, &dir, NPM_DEADLINE, cancel)
        .map_err(|e| format!("{e}\n(npm install needs the npm registry)"))?;
    if wasm_opt_version(program.as_os_str()) == pinned {
        Ok(program)
    } else {
        Err(format!(
            "{} does not report binaryen {BINARYEN_VERSION}: delete {} and build again",
            program.display(),
            dir.display()
        ))
    }
}

/// The longest `npm install binaryen` may run.
const NPM_DEADLINE: Duration = Duration::from_secs(10 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_opt_versions_are_read_from_what_binaryen_prints() {
        assert_eq!(
            parse_wasm_opt_version("wasm-opt version 132 (version_132)\n"),
            Some(132)
        );
        assert_eq!(parse_wasm_opt_version("wasm-opt version 108"), Some(108));
        assert_eq!(parse_wasm_opt_version("something else"), None);
        assert_eq!(binaryen_major(), 132);
    }
}
