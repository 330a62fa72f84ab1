//! What `cargo metadata` says about the worker crate: its library name, where cargo builds it,
//! and the versions of wasm-bindgen and proxy-fetch its own `Cargo.lock` resolved.

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// The package name of proxy-fetch: this tool's own, without `-build` (the crates share a
/// name, whatever it is).
pub fn runtime_package() -> &'static str {
    let own = env!("CARGO_PKG_NAME");
    own.strip_suffix("-build").unwrap_or(own)
}

pub struct Metadata {
    json: Value,
    manifest: PathBuf,
    pub target_directory: PathBuf,
}

/// The worker crate, as far as the build needs it.
#[derive(Debug, PartialEq)]
pub struct Worker {
    pub name: String,
    /// The `cdylib` target's name with `-` as `_`: the `.wasm` file cargo writes.
    pub lib_name: String,
    pub wasm_bindgen_version: String,
    pub proxy_fetch_version: String,
}

impl Metadata {
    /// Runs `cargo metadata` (with dependencies: it resolves, and writes `Cargo.lock` if the
    /// crate has none yet, as `cargo build` would).
    pub fn read(crate_dir: &Path, manifest: &Path) -> Result<Metadata> {
        let output = Command::new(crate::tools::cargo())
            .current_dir(crate_dir)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(manifest)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo metadata failed ({})", output.status));
        }
        let json: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
        let target_directory = json["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .ok_or("cargo metadata names no target_directory")?;
        let manifest = manifest
            .canonicalize()
            .map_err(|e| format!("{}: {e}", manifest.display()))?;
        Ok(Metadata {
            json,
            manifest,
            target_directory,
        })
    }

    pub fn worker(&self) -> Result<Worker> {
        worker(&self.json, &self.manifest)
    }
}

fn worker(json: &Value, manifest: &Path) -> Result<Worker> {
    let empty = Vec::new();
    let packages = json["packages"].as_array().unwrap_or(&empty);
    let package = packages
        .iter()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .is_some_and(|m| Path::new(m).canonicalize().is_ok_and(|m| m == manifest))
        })
        .ok_or_else(|| {
            format!(
                "{} is not a package (a workspace root?)",
                manifest.display()
            )
        })?;
    let name = text(package, "name")?;
    let lib_name = package["targets"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|k| k == "cdylib"))
        })
        .map(|t| text(t, "name"))
        .transpose()?
        .ok_or_else(|| {
            format!(
                "{name} has no cdylib target: add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml"
            )
        })?
        .replace('-', "_");

    let versions = dependency_versions(json, &text(package, "id")?);
    let one = |crate_name: &str, missing: String| -> Result<String> {
        match versions.get(crate_name).map(|v| v.as_slice()) {
            Some([version]) => Ok(version.clone()),
            Some(many) if many.len() > 1 => Err(format!(
                "{name} depends on several versions of {crate_name} ({}): the build needs exactly one",
                many.join(", ")
            )),
            _ => Err(missing),
        }
    };
    Ok(Worker {
        wasm_bindgen_version: one(
            "wasm-bindgen",
            format!("{name} does not depend on wasm-bindgen: is it a worker crate?"),
        )?,
        proxy_fetch_version: one(
            runtime_package(),
            format!(
                "{name} does not depend on {}: proxy-fetch-build builds proxy-fetch workers",
                runtime_package()
            ),
        )?,
        name,
        lib_name,
    })
}

fn text(value: &Value, key: &str) -> Result<String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("cargo metadata: no `{key}` in {value}"))
}

/// Name -> versions of every package the root builds with (dev-dependencies left out).
fn dependency_versions(json: &Value, root: &str) -> HashMap<String, Vec<String>> {
    let empty = Vec::new();
    let nodes: HashMap<&str, &Value> = json["resolve"]["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().unwrap_or(&empty) {
            let kinds = dep["dep_kinds"].as_array().unwrap_or(&empty);
            let dev_only = !kinds.is_empty() && kinds.iter().all(|k| k["kind"] == "dev");
            if let (false, Some(pkg)) = (dev_only, dep["pkg"].as_str()) {
                stack.push(pkg);
            }
        }
    }
    let mut versions: HashMap<String, Vec<String>> = HashMap::new();
    for package in json["packages"].as_array().unwrap_or(&empty) {
        if let (Some(id), Some(name), Some(version)) = (
            package["id"].as_str(),
            package["name"].as_str(),
            package["version"].as_str(),
        ) {
            if seen.contains(id) && id != root {
                versions
                    .entry(name.to_owned())
                    .or_default()
                    .push(version.to_owned());
            }
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(name: &str, version: &str, cdylib: bool) -> Value {
        let types = if cdylib {
            json!(["cdylib", "rlib"])
        } else {
            json!(["lib"])
        };
        json!({
            "name": name, "version": version, "id": format!("{name}@{version}"),
            "manifest_path": format!("/nonexistent/{name}/Cargo.toml"),
            "targets": [{ "name": name, "kind": types, "crate_types": types }],
        })
    }

    fn node(id: &str, deps: &[(&str, &str)]) -> Value {
        let deps: Vec<Value> = deps
            .iter()
            .map(|(pkg, kind)| {
                let kind = if kind.is_empty() {
                    Value::Null
                } else {
                    json!(kind)
                };
                json!({ "name": pkg, "pkg": pkg, "dep_kinds": [{ "kind": kind }] })
            })
            .collect();
        json!({ "id": id, "deps": deps })
    }

    #[test]
    fn versions_come_from_the_root_packages_own_graph() {
        let pf = format!("{}@0.1.0", runtime_package());
        let json = json!({
            "packages": [
                package("w", "0.1.0", true),
                package(runtime_package(), "0.1.0", false),
                package("wasm-bindgen", "0.2.129", false),
                package("wasm-bindgen", "0.2.100", false),
                package("trybuild", "1.0.0", false),
            ],
            "resolve": { "nodes": [
                node("w@0.1.0", &[(&pf, ""), ("trybuild@1.0.0", "dev")]),
                node(&pf, &[("wasm-bindgen@0.2.129", "")]),
                node("wasm-bindgen@0.2.129", &[]),
                node("trybuild@1.0.0", &[("wasm-bindgen@0.2.100", "")]),
            ]},
        });
        let versions = dependency_versions(&json, "w@0.1.0");
        assert_eq!(versions["wasm-bindgen"], vec!["0.2.129".to_owned()]);
        assert_eq!(versions[runtime_package()], vec!["0.1.0".to_owned()]);
        assert!(
            !versions.contains_key("trybuild"),
            "dev-dependencies are not built into the wasm"
        );
        assert!(!versions.contains_key("w"));
    }

    #[test]
    fn runtime_package_is_this_packages_name_without_build() {
        assert_eq!(
            format!("{}-build", runtime_package()),
            env!("CARGO_PKG_NAME")
        );
    }
}
