//! `proxy-fetch-build`: builds a Rust worker crate that uses proxy-fetch into what workerd runs.
//!
//! Run it in the crate's directory (or pass the directory); wrangler runs it as the
//! `[build] command`. It writes `<crate>/build/`:
//!
//! - `index_bg.wasm`, `index.js`: wasm-bindgen's output of the `cdylib` built for
//!   `wasm32-unknown-unknown`, optimized by binaryen's wasm-opt (a pinned one, installed with
//!   npm, when none is found);
//! - `proxy-fetch-runtime.js`: the JS runtime of this tool's own proxy-fetch version;
//! - `worker.js`: the main module (`main = "build/worker.js"` in wrangler.toml).
//!
//! The wasm-bindgen CLI must equal the wasm-bindgen library of the crate's own `Cargo.lock`;
//! the tool finds it or installs it once into a per-user cache (`tools.rs`, `install.rs`), while
//! cargo builds the crate.

#![warn(missing_docs)]

mod cargo;
mod dts;
mod install;
mod output;
mod tools;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The proxy-fetch version this tool's JS runtime belongs to.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors are messages for the user, printed as they are.
pub type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "\
usage: proxy-fetch-build [OPTIONS] [CRATE_DIR] [-- CARGO_BUILD_ARGS...]

Builds the worker crate in CRATE_DIR (default: the current directory) to wasm32 and writes
CRATE_DIR/build/worker.js, the main module for wrangler.toml's `main`.

options:
  --dev            cargo's dev profile instead of --release (a bigger, slower wasm)
  --no-opt         skip wasm-opt
  --out-dir DIR    write the build there instead of CRATE_DIR/build
  --dts            also write worker.d.ts, TypeScript declarations of the entrypoints (runs the
                   crate's native `__pf_dts_` tests; see docs/typescript.md)
  --dts-only       write worker.d.ts only (no wasm32 build)
  -V, --version    print the version (the proxy-fetch version it builds for)
  -h, --help       print this help

environment:
  WASM_BINDGEN       a wasm-bindgen CLI to use when it is of the crate's wasm-bindgen version
  WASM_OPT           the wasm-opt to run (else wasm-opt on PATH if binaryen 132 or newer, else
                     binaryen 132's, installed into the cache with npm; no npm: skipped)
  PROXY_FETCH_CACHE  where tools are installed (default ~/.cache/proxy-fetch); an install
                     holds <tool folder>.lock, and other builds wait for it";

#[derive(Debug, Default, PartialEq)]
struct Args {
    crate_dir: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    release: bool,
    wasm_opt: bool,
    /// Write worker.d.ts.
    dts: bool,
    /// Skip the wasm32 build (`--dts-only`).
    no_wasm: bool,
    cargo_args: Vec<OsString>,
    help: bool,
    version: bool,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut parsed = Args {
        release: true,
        wasm_opt: true,
        ..Args::default()
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--") => {
                parsed.cargo_args.extend(args.by_ref());
                break;
            }
            Some("--dev") | Some("--debug") => parsed.release = false,
            Some("--release") => parsed.release = true,
            Some("--no-opt") => parsed.wasm_opt = false,
            Some("--dts") => parsed.dts = true,
            Some("--dts-only") => {
                parsed.dts = true;
                parsed.no_wasm = true;
            }
            Some("--out-dir") => {
                let dir = args.next().ok_or("--out-dir needs a directory")?;
                parsed.out_dir = Some(dir.into());
            }
            Some("-h") | Some("--help") => parsed.help = true,
            Some("-V") | Some("--version") => parsed.version = true,
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n\n{USAGE}"))
            }
            _ if parsed.crate_dir.is_none() => parsed.crate_dir = Some(arg.into()),
            _ => return Err(format!("one crate directory at a time\n\n{USAGE}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args_os().skip(1)).and_then(|args| {
        if args.help {
            println!("{USAGE}");
            Ok(())
        } else if args.version {
            println!("proxy-fetch-build {VERSION}");
            Ok(())
        } else {
            if !args.no_wasm {
                build(&args)?;
            }
            if args.dts {
                declarations(&args)?;
            }
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("proxy-fetch-build: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--dts`: writes `<out>/worker.d.ts` (dts.rs).
fn declarations(args: &Args) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    let crate_dir = match &args.crate_dir {
        Some(dir) => cwd.join(dir),
        None => cwd.clone(),
    };
    let manifest = crate_dir.join("Cargo.toml");
    let metadata = cargo::Metadata::read(&crate_dir, &manifest)?;
    let worker = metadata.worker()?;
    let out = args
        .out_dir
        .as_ref()
        .map_or_else(|| crate_dir.join("build"), |dir| cwd.join(dir));
    let scratch = sibling(&out, ".dts-tmp");
    let dts = dts::generate(&crate_dir, &manifest, &scratch, &worker.name)?;
    fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let path = out.join("worker.d.ts");
    write(&path, &dts)?;
    println!(
        "proxy-fetch-build: {} -> {} (TypeScript declarations)",
        worker.name,
        path.display()
    );
    Ok(())
}

fn build(args: &Args) -> Result<()> {
    let cwd = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    let crate_dir = match &args.crate_dir {
        Some(dir) => cwd.join(dir),
        None => cwd.clone(),
    };
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!(
            "no Cargo.toml in {}: run proxy-fetch-build in the worker crate's directory, or pass it",
            crate_dir.display()
        ));
    }

    // Everything that can be refused is refused before the (long) build.
    let metadata = cargo::Metadata::read(&crate_dir, &manifest)?;
    let worker = metadata.worker()?;
    if worker.proxy_fetch_version != VERSION {
        return Err(version_mismatch(&worker.proxy_fetch_version));
    }
    tools::check_wasm32_std(&crate_dir, &args.cargo_args)?;

    // The tools are found, or installed (minutes, the first time), while cargo builds the
    // crate: the two fill each other's single-threaded stretches on a small machine.
    let cancel = install::Cancel::default();
    let tools = {
        let (crate_dir, version, cancel) = (
            crate_dir.clone(),
            worker.wasm_bindgen_version.clone(),
            cancel.clone(),
        );
        let want_opt = args.wasm_opt;
        std::thread::spawn(move || -> Result<(PathBuf, Option<PathBuf>)> {
            let wasm_bindgen = tools::wasm_bindgen(&crate_dir, &version, &cancel)?;
            let wasm_opt = if want_opt {
                tools::wasm_opt(&crate_dir, &cancel)
            } else {
                None
            };
            Ok((wasm_bindgen, wasm_opt))
        })
    };

    let mut cargo = Command::new(tools::cargo());
    cargo
        .current_dir(&crate_dir)
        .arg("build")
        .arg("--lib")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--target", "wasm32-unknown-unknown"]);
    if args.release {
        cargo.arg("--release");
    }
    cargo.args(&args.cargo_args);
    let built = tools::run(&mut cargo, "cargo build");
    if built.is_err() {
        cancel.cancel();
    } else if !tools.is_finished() {
        install::say("the crate is built; waiting for the tool install to finish");
    }
    let tools = tools
        .join()
        .unwrap_or_else(|_| Err("the tool install stopped unexpectedly".to_owned()));
    built?;
    let (wasm_bindgen, wasm_opt) = tools?;

    let profile = if args.release { "release" } else { "debug" };
    let wasm_file = metadata
        .target_directory
        .join("wasm32-unknown-unknown")
        .join(profile)
        .join(format!("{}.wasm", worker.lib_name));
    if !wasm_file.is_file() {
        return Err(format!("cargo build produced no {}", wasm_file.display()));
    }

    // Build into a staging folder and swap it in whole, so a failed build never leaves a
    // half-written worker behind for a running `wrangler dev` to pick up.
    let out = args
        .out_dir
        .as_ref()
        .map_or_else(|| crate_dir.join("build"), |dir| cwd.join(dir));
    // wrangler runs the build command again when its watcher starts, and on any change under
    // src/: when cargo's wasm and the tools are unchanged, the last output stands.
    let stamp = stamp(
        &wasm_file,
        &wasm_bindgen,
        wasm_opt.as_deref(),
        args.wasm_opt,
    )?;
    if out.join("worker.js").is_file()
        && fs::read_to_string(out.join(STAMP)).ok() == Some(stamp.clone())
    {
        println!(
            "proxy-fetch-build: {} -> {} is up to date (cargo's wasm is unchanged)",
            worker.name,
            out.join("worker.js").display()
        );
        return Ok(());
    }
    let staging = sibling(&out, ".tmp");
    remove_dir(&staging)?;
    tools::run(
        Command::new(&wasm_bindgen)
            .args(["--target", "module", "--out-name", "index"])
            // What workers-rs relies on to replace the Wasm instance after a panic.
            .args([
                "--experimental-reset-state-function",
                "--force-enable-abort-handler",
            ])
            .arg("--out-dir")
            .arg(&staging)
            .arg(&wasm_file),
        "wasm-bindgen",
    )?;

    let index_path = staging.join("index.js");
    let index_js = read(&index_path)?;
    match output::version_marker(&index_js) {
        Some(version) if version == output::marker_version(VERSION) => {}
        Some(version) => return Err(version_mismatch(&version.replace('_', "."))),
        None => {
            return Err(format!(
                "{} exports no proxy-fetch version marker: it was built against a proxy-fetch \
                 older than {VERSION}, or without proxy-fetch",
                wasm_file.display()
            ))
        }
    }
    // workerd imports a .wasm as a compiled module through a plain import.
    let mut index_js = index_js.replacen("import source ", "import ", 1);
    match output::microtasks_on_promises(&index_js) {
        Some(rewritten) => index_js = rewritten,
        None => println!(
            "proxy-fetch-build: note: wasm-bindgen's output calls no `queueMicrotask` import to \
             rewrite; Rust futures keep workerd's slower `queueMicrotask`"
        ),
    }
    write(&index_path, &index_js)?;

    let wasm_out = staging.join("index_bg.wasm");
    // Without one, tools::wasm_opt said why.
    if let Some(wasm_opt) = &wasm_opt {
        tools::run(
            Command::new(wasm_opt)
                .arg(&wasm_out)
                .arg("-Os")
                .args(tools::WASM_FEATURES)
                .arg("-o")
                .arg(&wasm_out),
            "wasm-opt (skip it with --no-opt)",
        )?;
    }

    write(&staging.join("proxy-fetch-runtime.js"), output::RUNTIME_JS)?;
    let classes = output::declared_classes(&index_js);
    let problems = output::export_problems(&classes);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    write(&staging.join("worker.js"), &output::main_module(&classes))?;
    write(&staging.join(STAMP), &stamp)?;

    remove_dir(&out)?;
    fs::rename(&staging, &out).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            staging.display(),
            out.display()
        )
    })?;
    let size = fs::metadata(out.join("index_bg.wasm")).map_or(0, |m| m.len());
    println!(
        "proxy-fetch-build: {} -> {} (wasm {} KiB; entrypoints: {}; durable objects: {})",
        worker.name,
        out.join("worker.js").display(),
        size / 1024,
        list(&classes.entrypoints),
        list(&classes.durable_objects),
    );
    Ok(())
}

/// What a build's output depends on besides the crate: written beside it, compared next time.
const STAMP: &str = ".proxy-fetch-build";

fn stamp(wasm: &Path, wasm_bindgen: &Path, wasm_opt: Option<&Path>, opt: bool) -> Result<String> {
    use std::hash::{Hash, Hasher};
    let hash = |path: &Path| -> Result<String> {
        let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        Ok(format!(
            "{} bytes, hash {:016x}",
            bytes.len(),
            hasher.finish()
        ))
    };
    // This program itself: a rebuilt CLI (another JS runtime, another main module) rebuilds.
    let this = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    Ok(format!(
        "proxy-fetch-build {VERSION} ({})\nwasm-bindgen {}\nwasm-opt {}\ninput {}\n",
        hash(&this)?,
        wasm_bindgen.display(),
        match (opt, wasm_opt) {
            (true, Some(path)) => path.display().to_string(),
            _ => "-".to_owned(),
        },
        hash(wasm)?,
    ))
}

fn version_mismatch(theirs: &str) -> String {
    let package = env!("CARGO_PKG_NAME");
    format!(
        "the crate is built against proxy-fetch {theirs}, but this proxy-fetch-build is \
         {VERSION} and carries the JS runtime of {VERSION}: install the matching one \
         (cargo install {package} --version ={theirs}, or --path <proxy-fetch checkout>/proxy-fetch-build)"
    )
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(", ")
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, content: &str) -> Result<()> {
    fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse_args(list.iter().map(OsString::from))
    }

    #[test]
    fn defaults_build_the_current_directory_in_release_with_wasm_opt() {
        let parsed = args(&[]).unwrap();
        assert_eq!(parsed.crate_dir, None);
        assert!(parsed.release && parsed.wasm_opt);
    }

    #[test]
    fn arguments_after_double_dash_go_to_cargo() {
        let parsed = args(&["w", "--dev", "--", "--features", "x"]).unwrap();
        assert_eq!(parsed.crate_dir, Some(PathBuf::from("w")));
        assert!(!parsed.release);
        assert_eq!(
            parsed.cargo_args,
            vec![OsString::from("--features"), "x".into()]
        );
    }

    #[test]
    fn dts_flags_add_declarations_or_replace_the_wasm_build() {
        let dts = args(&["--dts"]).unwrap();
        assert!(dts.dts && !dts.no_wasm);
        let only = args(&["--dts-only", "tests/worker"]).unwrap();
        assert!(only.dts && only.no_wasm);
        assert_eq!(only.crate_dir, Some(PathBuf::from("tests/worker")));
    }

    #[test]
    fn unknown_options_and_a_second_crate_are_refused() {
        assert!(args(&["--frobnicate"])
            .unwrap_err()
            .contains("unknown option"));
        assert!(args(&["a", "b"]).unwrap_err().contains("one crate"));
        assert!(args(&["--out-dir"])
            .unwrap_err()
            .contains("needs a directory"));
    }

    #[test]
    fn stamp_changes_with_the_wasm_and_with_wasm_opt() {
        let dir = std::env::temp_dir().join(format!("pf-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join("a.wasm");
        let (bindgen, opt) = (
            Path::new("/bin/wasm-bindgen"),
            Some(Path::new("/bin/wasm-opt")),
        );
        fs::write(&wasm, b"one").unwrap();
        let first = stamp(&wasm, bindgen, opt, true).unwrap();
        assert_eq!(first, stamp(&wasm, bindgen, opt, true).unwrap());
        assert_ne!(first, stamp(&wasm, bindgen, opt, false).unwrap());
        fs::write(&wasm, b"two").unwrap();
        assert_ne!(first, stamp(&wasm, bindgen, opt, true).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staging_dir_sits_beside_the_output() {
        assert_eq!(
            sibling(Path::new("/w/build"), ".tmp"),
            PathBuf::from("/w/build.tmp")
        );
    }
}
