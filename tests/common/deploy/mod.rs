//! Helpers of the deploy_* tests, which check that deploy/ agrees with the
//! repository and with the `tenantry` binary: paths of the repository, YAML
//! access, the problem report, and every command line that runs tenantry.
//! Parsers of each file kind live in the submodules (`cli` for command lines,
//! `docker`, `compose`, `k8s`); the checks themselves live in the test files.
//! No database and no Docker needed.

pub mod cli;
pub mod compose;
pub mod docker;
pub mod k8s;

pub use cli::*;
pub use compose::*;
pub use docker::*;
pub use k8s::*;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

pub const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
/// `serve`'s default `--pool-size` (single-tenant mode).
pub const DEFAULT_SINGLE_POOL: i64 = 8;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

pub fn k8s_dir() -> PathBuf {
    deploy_dir().join("k8s")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Fails the test with every problem found.
pub fn report(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Lexically normalised (no `.`/`..`), without touching the filesystem.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Every document of a YAML file (empty documents left out).
pub fn yaml_docs(path: &Path) -> Result<Vec<Yaml>, String> {
    YamlLoader::load_from_str(&read(path))
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| format!("{}: invalid YAML: {e}", rel(path)))
}

pub fn yaml_docs_ok(path: &Path) -> Vec<Yaml> {
    yaml_docs(path).unwrap_or_else(|e| panic!("{e}"))
}

pub fn list(y: &Yaml) -> &[Yaml] {
    match y.as_vec() {
        Some(v) => v,
        None => &[],
    }
}

/// A scalar as text (YAML `4001` and `"4001"` alike).
pub fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn strings(y: &Yaml) -> Vec<String> {
    list(y).iter().filter_map(scalar).collect()
}

pub fn str_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| h.keys().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// Every `.yml`/`.yaml` file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every command line that runs tenantry, with where it comes from.
pub fn tenantry_command_lines() -> Vec<(String, Vec<String>)> {
    let df = Dockerfile::load();
    let mut out = vec![("deploy/Dockerfile CMD".to_owned(), df.command())];
    let compose = Compose::load();
    let images = compose.our_images();
    for s in compose.services() {
        out.push((s.origin(), s.argv(&df, &images)));
    }
    let kust = Kustomization::load();
    let objects = kust.objects();
    for w in workloads(&objects) {
        for (_, c) in w.containers() {
            out.push((
                format!("{} container {}", w.origin(), container_name(c)),
                container_argv(c, &df),
            ));
        }
    }
    out.retain(|(_, argv)| is_tenantry(argv));
    out
}
