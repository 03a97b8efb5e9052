//! deploy/ agrees with the repository and with the `tenantry` binary: the
//! Dockerfile, the compose file and the Kubernetes manifests parse, name files
//! that exist, run command lines the binary accepts, probe the ports the
//! gateway listens on, and read inventories that validate. No database and no
//! Docker needed.
//!
//! Each test collects every problem it finds and fails once, listing them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use tenantry_manifest::{Group, Inventory, PasswordSource, ADMIN_URL_ENV};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
/// `serve`'s default `--pool-size` (single-tenant mode).
const DEFAULT_SINGLE_POOL: i64 = 8;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

fn k8s_dir() -> PathBuf {
    deploy_dir().join("k8s")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Fails the test with every problem found.
fn report(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Lexically normalised (no `.`/`..`), without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
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
fn yaml_docs(path: &Path) -> Result<Vec<Yaml>, String> {
    YamlLoader::load_from_str(&read(path))
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| format!("{}: invalid YAML: {e}", rel(path)))
}

fn yaml_docs_ok(path: &Path) -> Vec<Yaml> {
    yaml_docs(path).unwrap_or_else(|e| panic!("{e}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    match y.as_vec() {
        Some(v) => v,
        None => &[],
    }
}

/// A scalar as text (YAML `4001` and `"4001"` alike).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    list(y).iter().filter_map(scalar).collect()
}

fn str_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| h.keys().filter_map(scalar).collect())
        .unwrap_or_default()
}

/// Every `.yml`/`.yaml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
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

// ---------------------------------------------------------------------------
// Command lines

/// Whether `argv` runs the tenantry binary.
fn is_tenantry(argv: &[String]) -> bool {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "tenantry")
}

/// The tenantry subcommand of `argv` (`serve`, `apply`, ...).
fn subcommand(argv: &[String]) -> Option<&str> {
    argv.get(1).map(String::as_str)
}

/// The value of `--name value` or `--name=value`.
fn flag(argv: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

/// Runs the real argument parser on `argv` with `--help` appended: clap
/// rejects an unknown subcommand, flag or value before it gets to `--help`.
fn cli_accepts(argv: &[String]) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(&argv[1..])
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {BIN}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `host:port` of a `--listen`/`--admin-listen` value.
fn socket(value: &str) -> Result<std::net::SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("{value:?} is not an address: {e}"))
}

/// Port and path of the first `http://host:port/path` in `words`.
fn http_target(words: &[String]) -> Option<(u16, String)> {
    let w = words.iter().find_map(|w| {
        w.find("http://")
            .map(|i| w[i + "http://".len()..].to_owned())
    })?;
    let (authority, path) = match w.find('/') {
        Some(i) => (&w[..i], w[i..].to_owned()),
        None => (w.as_str(), "/".to_owned()),
    };
    let port = authority.rsplit_once(':')?.1.parse().ok()?;
    Some((port, path))
}

/// The host of a `postgres://user:pw@host:port/db` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find([':', '/', '?']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The listen and admin ports of a `tenantry serve` command line, checked:
/// both given, both on an address reachable from outside the container.
fn serve_ports(argv: &[String], origin: &str, problems: &mut Vec<String>) -> Option<(u16, u16)> {
    let mut get = |name: &str| -> Option<u16> {
        let Some(value) = flag(argv, name) else {
            problems.push(format!(
                "{origin}: `tenantry serve` without {name} (its default is for a laptop; say it in a container)"
            ));
            return None;
        };
        match socket(&value) {
            Ok(addr) if addr.ip().is_loopback() => {
                problems.push(format!(
                    "{origin}: {name} {value} is loopback: nothing outside the container (published ports, probes) reaches it; use 0.0.0.0"
                ));
                None
            }
            Ok(addr) => Some(addr.port()),
            Err(e) => {
                problems.push(format!("{origin}: {name}: {e}"));
                None
            }
        }
    };
    let listen = get("--listen");
    let admin = get("--admin-listen");
    Some((listen?, admin?))
}

// ---------------------------------------------------------------------------
// Dockerfile

struct Instr {
    line: usize,
    op: String,
    args: String,
}

struct CopyInstr {
    line: usize,
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

struct Dockerfile {
    instrs: Vec<Instr>,
}

impl Dockerfile {
    fn path() -> PathBuf {
        deploy_dir().join("Dockerfile")
    }

    fn load() -> Dockerfile {
        Dockerfile::parse(&read(&Dockerfile::path()))
    }

    /// Instructions with their continuation lines joined; comments dropped.
    fn parse(text: &str) -> Dockerfile {
        let mut instrs = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
                continue;
            }
            let (body, continues) = match trimmed.strip_suffix('\\') {
                Some(b) => (b, true),
                None => (trimmed, false),
            };
            let (start, mut text) = current.take().unwrap_or((i + 1, String::new()));
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(body.trim());
            if continues {
                current = Some((start, text));
            } else if !text.trim().is_empty() {
                let (op, args) = text
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((&text, ""));
                instrs.push(Instr {
                    line: start,
                    op: op.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
            }
        }
        Dockerfile { instrs }
    }

    /// The instructions of the last stage (after the last FROM).
    fn final_stage(&self) -> &[Instr] {
        let start = self
            .instrs
            .iter()
            .rposition(|i| i.op == "FROM")
            .map_or(0, |p| p + 1);
        &self.instrs[start..]
    }

    fn last<'a>(&'a self, op: &str) -> Option<&'a Instr> {
        self.final_stage().iter().rev().find(|i| i.op == op)
    }

    /// Exec form (a JSON array) or shell form, as words.
    fn words(args: &str) -> Vec<String> {
        if args.trim_start().starts_with('[') {
            serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form {args:?}: {e}"))
        } else {
            args.split_whitespace().map(str::to_owned).collect()
        }
    }

    /// ENTRYPOINT + CMD of the image.
    fn command(&self) -> Vec<String> {
        let mut argv = self
            .last("ENTRYPOINT")
            .map_or(Vec::new(), |i| Dockerfile::words(&i.args));
        argv.extend(
            self.last("CMD")
                .map_or(Vec::new(), |i| Dockerfile::words(&i.args)),
        );
        argv
    }

    fn exposed(&self) -> BTreeSet<u16> {
        self.final_stage()
            .iter()
            .filter(|i| i.op == "EXPOSE")
            .flat_map(|i| i.args.split_whitespace())
            .map(|p| {
                p.split('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"))
            })
            .collect()
    }

    /// The HEALTHCHECK's command (options and `CMD` stripped).
    fn healthcheck(&self) -> Option<Vec<String>> {
        let i = self.last("HEALTHCHECK")?;
        let mut rest = i.args.as_str();
        while let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once(char::is_whitespace)
                .map_or("", |(_, r)| r)
                .trim_start();
        }
        let rest = rest.strip_prefix("CMD")?;
        Some(Dockerfile::words(rest))
    }

    fn workdir(&self) -> PathBuf {
        self.last("WORKDIR")
            .map_or(PathBuf::from("/"), |i| PathBuf::from(&i.args))
    }

    /// Stage names (`FROM image AS name`).
    fn stages(&self) -> Vec<String> {
        self.instrs
            .iter()
            .filter(|i| i.op == "FROM")
            .filter_map(|i| {
                let w: Vec<&str> = i.args.split_whitespace().collect();
                w.iter()
                    .position(|x| x.eq_ignore_ascii_case("as"))
                    .and_then(|p| w.get(p + 1))
                    .map(|s| s.to_string())
            })
            .collect()
    }

    fn copies(&self, final_only: bool) -> Vec<CopyInstr> {
        let instrs = if final_only {
            self.final_stage()
        } else {
            &self.instrs[..]
        };
        instrs
            .iter()
            .filter(|i| i.op == "COPY" || i.op == "ADD")
            .map(|i| {
                let mut from = None;
                let mut words = Vec::new();
                for w in i.args.split_whitespace() {
                    if let Some(f) = w.strip_prefix("--from=") {
                        from = Some(f.to_owned());
                    } else if !w.starts_with("--") || !words.is_empty() {
                        words.push(w.to_owned());
                    }
                }
                if words.first().is_some_and(|w| w.starts_with('[')) {
                    words = Dockerfile::words(&words.join(" "));
                }
                let dest = words.pop().unwrap_or_default();
                CopyInstr {
                    line: i.line,
                    from,
                    sources: words,
                    dest,
                }
            })
            .collect()
    }

    /// Paths of the final image that COPY puts there (from the build
    /// context), resolved against WORKDIR.
    fn copied_paths(&self) -> Vec<PathBuf> {
        let workdir = self.workdir();
        self.copies(true)
            .into_iter()
            .filter(|c| c.from.is_none())
            .flat_map(|c| {
                let dest = workdir.join(&c.dest);
                let many = c.dest.ends_with('/');
                c.sources
                    .into_iter()
                    .map(move |s| {
                        if many {
                            dest.join(Path::new(&s).file_name().unwrap_or_default())
                        } else {
                            dest.clone()
                        }
                    })
                    .map(|p| normalize(&p))
            })
            .collect()
    }
}

/// `deploy/Dockerfile.dockerignore`, as a matcher of context-relative paths.
struct DockerIgnore {
    patterns: Vec<String>,
}

impl DockerIgnore {
    fn load() -> DockerIgnore {
        let path = deploy_dir().join("Dockerfile.dockerignore");
        DockerIgnore {
            patterns: read(&path)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// `*` within one component only: enough for the patterns used here.
    fn glob(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((pre, post)) => {
                name.len() >= pre.len() + post.len()
                    && name.starts_with(pre)
                    && DockerIgnore::glob_tail(post, &name[pre.len()..])
            }
        }
    }

    fn glob_tail(pattern: &str, rest: &str) -> bool {
        (0..=rest.len())
            .filter(|&i| rest.is_char_boundary(i))
            .any(|i| DockerIgnore::glob(pattern, &rest[i..]))
    }

    fn ignored(&self, path: &str) -> bool {
        let comps: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        self.patterns.iter().any(|p| {
            if let Some(name) = p.strip_prefix("**/") {
                comps.iter().any(|c| DockerIgnore::glob(name, c))
            } else {
                let pc: Vec<&str> = p.split('/').collect();
                pc.len() <= comps.len()
                    && pc.iter().zip(&comps).all(|(p, c)| DockerIgnore::glob(p, c))
            }
        })
    }
}

// ---------------------------------------------------------------------------
// compose

struct Mount {
    /// A host path (bind mount) or a volume name.
    source: Option<String>,
    target: String,
    bind: bool,
}

struct Service<'a> {
    name: String,
    y: &'a Yaml,
}

impl Service<'_> {
    fn origin(&self) -> String {
        format!("deploy/compose.yml service {}", self.name)
    }

    /// Whether it runs the image of deploy/Dockerfile (built from it, or the
    /// same image name as a service that is).
    fn runs_our_image(&self, images: &BTreeSet<String>) -> bool {
        self.builds_our_dockerfile()
            || scalar(&self.y["image"]).is_some_and(|i| images.contains(&i))
    }

    fn build(&self) -> Option<(PathBuf, PathBuf)> {
        let b = &self.y["build"];
        let (context, dockerfile) = match b {
            Yaml::BadValue => return None,
            Yaml::String(c) => (c.clone(), "Dockerfile".to_owned()),
            _ => (
                scalar(&b["context"]).unwrap_or_else(|| ".".into()),
                scalar(&b["dockerfile"]).unwrap_or_else(|| "Dockerfile".into()),
            ),
        };
        let context = normalize(&deploy_dir().join(context));
        let dockerfile = normalize(&context.join(dockerfile));
        Some((context, dockerfile))
    }

    fn builds_our_dockerfile(&self) -> bool {
        self.build().is_some_and(|(_, d)| d == Dockerfile::path())
    }

    /// The command it runs: its own, or the image's.
    fn argv(&self, image: &Dockerfile, images: &BTreeSet<String>) -> Vec<String> {
        match &self.y["command"] {
            Yaml::Array(_) => strings(&self.y["command"]),
            Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            _ if self.runs_our_image(images) => image.command(),
            _ => Vec::new(),
        }
    }

    fn mounts(&self) -> Vec<Mount> {
        list(&self.y["volumes"])
            .iter()
            .filter_map(|v| match v {
                Yaml::String(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    let (source, target) = match parts.as_slice() {
                        [t] => (None, t.to_string()),
                        [s, t, ..] => (Some(s.to_string()), t.to_string()),
                        [] => return None,
                    };
                    let bind = source
                        .as_deref()
                        .is_some_and(|s| s.starts_with(['.', '/', '~']));
                    Some(Mount {
                        source,
                        target,
                        bind,
                    })
                }
                Yaml::Hash(_) => Some(Mount {
                    source: scalar(&v["source"]),
                    target: scalar(&v["target"])?,
                    bind: scalar(&v["type"]).as_deref() == Some("bind"),
                }),
                _ => None,
            })
            .collect()
    }

    fn env(&self) -> BTreeMap<String, String> {
        match &self.y["environment"] {
            Yaml::Array(a) => a
                .iter()
                .filter_map(scalar)
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            other => str_map(other),
        }
    }

    fn healthcheck_disabled(&self) -> bool {
        let h = &self.y["healthcheck"];
        h["disable"].as_bool() == Some(true)
            || strings(&h["test"]).first().map(String::as_str) == Some("NONE")
    }

    /// The healthcheck's command (`CMD`/`CMD-SHELL` dropped), if it has one.
    fn healthcheck(&self) -> Option<Vec<String>> {
        let h = &self.y["healthcheck"]["test"];
        match h {
            Yaml::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
            Yaml::Array(_) => {
                let mut w = strings(h);
                if w.first().is_some_and(|f| f.starts_with("CMD")) {
                    w.remove(0);
                }
                Some(w)
            }
            _ => None,
        }
    }

    /// `(service, condition)` of depends_on.
    fn depends_on(&self) -> Vec<(String, String)> {
        match &self.y["depends_on"] {
            Yaml::Array(a) => a
                .iter()
                .filter_map(scalar)
                .map(|s| (s, "service_started".to_owned()))
                .collect(),
            Yaml::Hash(h) => h
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        scalar(k)?,
                        scalar(&v["condition"]).unwrap_or_else(|| "service_started".into()),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Container ports it publishes.
    fn published(&self) -> Vec<u16> {
        list(&self.y["ports"])
            .iter()
            .filter_map(|p| match p {
                Yaml::Hash(_) => scalar(&p["target"]),
                other => scalar(other).map(|s| s.rsplit(':').next().unwrap().to_owned()),
            })
            .map(|s| {
                s.split('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|e| panic!("port {s}: {e}"))
            })
            .collect()
    }
}

struct Compose {
    doc: Yaml,
}

impl Compose {
    fn load() -> Compose {
        let path = deploy_dir().join("compose.yml");
        let mut docs = yaml_docs_ok(&path);
        assert_eq!(docs.len(), 1, "deploy/compose.yml: expected one document");
        Compose {
            doc: docs.remove(0),
        }
    }

    fn services(&self) -> Vec<Service<'_>> {
        self.doc["services"]
            .as_hash()
            .expect("deploy/compose.yml has no services")
            .iter()
            .map(|(k, v)| Service {
                name: scalar(k).unwrap(),
                y: v,
            })
            .collect()
    }

    /// Image names of the services built from deploy/Dockerfile.
    fn our_images(&self) -> BTreeSet<String> {
        self.services()
            .iter()
            .filter(|s| s.builds_our_dockerfile())
            .filter_map(|s| scalar(&s.y["image"]))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Kubernetes

struct Kustomization {
    y: Yaml,
}

impl Kustomization {
    fn load() -> Kustomization {
        let mut docs = yaml_docs_ok(&k8s_dir().join("kustomization.yaml"));
        assert_eq!(docs.len(), 1, "kustomization.yaml: expected one document");
        Kustomization { y: docs.remove(0) }
    }

    fn resources(&self) -> Vec<String> {
        strings(&self.y["resources"])
    }

    /// ConfigMap name -> the files (keys) it holds, from configMapGenerator.
    fn generated_configmaps(&self) -> BTreeMap<String, Vec<String>> {
        list(&self.y["configMapGenerator"])
            .iter()
            .filter_map(|g| Some((scalar(&g["name"])?, strings(&g["files"]))))
            .collect()
    }

    /// Files named by every generator (`key=path` gives `path`).
    fn generator_files(&self) -> Vec<String> {
        ["configMapGenerator", "secretGenerator"]
            .iter()
            .flat_map(|g| list(&self.y[*g]))
            .flat_map(|g| strings(&g["files"]))
            .map(|f| f.split_once('=').map_or(f.clone(), |(_, p)| p.to_owned()))
            .collect()
    }

    /// The objects of every listed resource, with their file.
    fn objects(&self) -> Vec<(String, Yaml)> {
        self.resources()
            .into_iter()
            .flat_map(|r| {
                yaml_docs_ok(&k8s_dir().join(&r))
                    .into_iter()
                    .map(move |d| (r.clone(), d))
            })
            .collect()
    }
}

/// Secret name -> keys, from the example Secrets (passwords.example.yaml).
fn example_secrets() -> BTreeMap<String, BTreeSet<String>> {
    yaml_docs_ok(&k8s_dir().join("passwords.example.yaml"))
        .iter()
        .filter(|d| scalar(&d["kind"]).as_deref() == Some("Secret"))
        .map(|d| {
            let mut k: BTreeSet<String> = keys(&d["stringData"]).into_iter().collect();
            k.extend(keys(&d["data"]));
            (scalar(&d["metadata"]["name"]).unwrap_or_default(), k)
        })
        .collect()
}

/// The name `tenantry env <tenant> --format k8s-secret` gives its Secret.
fn tenant_secret_name(tenant: &str, role: &str) -> String {
    format!("tenantry-{}-{role}", tenant.replace('_', "-"))
}

/// `(tenant, role)` of a name following that rule, for a tenant of `inv`.
fn parse_tenant_secret(name: &str, inv: &Inventory) -> Option<(String, Group)> {
    inv.tenants.iter().find_map(|t| {
        Group::MEMBERS.into_iter().find_map(|g| {
            (tenant_secret_name(t.name.as_str(), g.as_str()) == name)
                .then(|| (t.name.to_string(), g))
        })
    })
}

/// A Deployment or Job: its pod template.
struct Workload<'a> {
    file: String,
    kind: String,
    name: String,
    replicas: i64,
    labels: BTreeMap<String, String>,
    pod: &'a Yaml,
}

impl Workload<'_> {
    fn origin(&self) -> String {
        format!("deploy/k8s/{} {} {}", self.file, self.kind, self.name)
    }

    fn containers(&self) -> impl Iterator<Item = (bool, &Yaml)> {
        list(&self.pod["initContainers"])
            .iter()
            .map(|c| (true, c))
            .chain(list(&self.pod["containers"]).iter().map(|c| (false, c)))
    }

    /// Single-tenant mode: labelled with its tenant.
    fn tenant(&self) -> Option<(&str, &str)> {
        Some((
            self.labels.get("tenantry.dev/tenant")?.as_str(),
            self.labels.get("tenantry.dev/role")?.as_str(),
        ))
    }

    fn volume(&self, name: &str) -> Option<&Yaml> {
        list(&self.pod["volumes"])
            .iter()
            .find(|v| scalar(&v["name"]).as_deref() == Some(name))
    }
}

fn workloads(objects: &[(String, Yaml)]) -> Vec<Workload<'_>> {
    objects
        .iter()
        .filter_map(|(file, o)| {
            let kind = scalar(&o["kind"])?;
            if kind != "Deployment" && kind != "Job" {
                return None;
            }
            let template = &o["spec"]["template"];
            Some(Workload {
                file: file.clone(),
                kind,
                name: scalar(&o["metadata"]["name"]).unwrap_or_default(),
                replicas: o["spec"]["replicas"].as_i64().unwrap_or(1),
                labels: str_map(&template["metadata"]["labels"]),
                pod: &template["spec"],
            })
        })
        .collect()
}

/// A container's command line: command + args, or the image's when the
/// container runs the tenantry image without either.
fn container_argv(c: &Yaml, image: &Dockerfile) -> Vec<String> {
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    let ours = scalar(&c["image"]).is_some_and(|i| {
        let name = i.rsplit('/').next().unwrap_or(&i);
        name.split([':', '@']).next() == Some("tenantry")
    });
    if argv.is_empty() && ours {
        image.command()
    } else {
        argv
    }
}

fn container_name(c: &Yaml) -> String {
    scalar(&c["name"]).unwrap_or_default()
}

/// containerPort by name, and every containerPort.
fn container_ports(c: &Yaml) -> (BTreeMap<String, u16>, BTreeSet<u16>) {
    let mut named = BTreeMap::new();
    let mut all = BTreeSet::new();
    for p in list(&c["ports"]) {
        let Some(port) = p["containerPort"].as_i64() else {
            continue;
        };
        let port = port as u16;
        all.insert(port);
        if let Some(n) = scalar(&p["name"]) {
            named.insert(n, port);
        }
    }
    (named, all)
}

/// A port given by number or by a container port's name.
fn resolve_port(y: &Yaml, named: &BTreeMap<String, u16>) -> Option<u16> {
    match y {
        Yaml::Integer(i) => u16::try_from(*i).ok(),
        Yaml::String(s) => s.parse().ok().or_else(|| named.get(s).copied()),
        _ => None,
    }
}

/// The mount (path, volume) of `c` that holds `path`: the longest mountPath
/// that is `path` or one of its parents.
fn covering_mount<'y>(c: &'y Yaml, path: &Path) -> Option<(PathBuf, &'y Yaml)> {
    list(&c["volumeMounts"])
        .iter()
        .filter_map(|m| Some((PathBuf::from(scalar(&m["mountPath"])?), m)))
        .filter(|(p, _)| path.starts_with(p))
        .max_by_key(|(p, _)| p.components().count())
}

/// Secret names a container reads (envFrom and valueFrom), with the keys
/// read one by one.
fn secret_refs(c: &Yaml) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = list(&c["envFrom"])
        .iter()
        .filter_map(|e| scalar(&e["secretRef"]["name"]))
        .map(|n| (n, None))
        .collect();
    for e in list(&c["env"]) {
        let r = &e["valueFrom"]["secretKeyRef"];
        if let Some(n) = scalar(&r["name"]) {
            out.push((n, scalar(&r["key"])));
        }
    }
    out
}

/// The k8s inventory, with every password variable treated as set.
fn k8s_inventory() -> Inventory {
    let path = k8s_dir().join("tenants.toml");
    Inventory::from_str_with(&read(&path), &path, &|name| {
        (name != ADMIN_URL_ENV).then(|| "placeholder".to_owned())
    })
    .unwrap_or_else(|e| panic!("deploy/k8s/tenants.toml: {e}"))
}

/// The password variables an inventory names, sorted.
fn password_vars(inv: &Inventory) -> BTreeSet<String> {
    inv.tenants
        .iter()
        .flat_map(|t| &t.users)
        .filter_map(|u| match &u.password {
            PasswordSource::Env { var } => Some(var.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn yaml_files_parse_and_kubernetes_objects_are_named() {
    let mut problems = Vec::new();
    let files = yaml_files(&deploy_dir());
    assert!(
        files.len() >= 6,
        "expected compose.yml and the k8s manifests under deploy/, found {files:?}"
    );
    for f in &files {
        let docs = match yaml_docs(f) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if docs.is_empty() {
            problems.push(format!("{}: no document", rel(f)));
        }
        if !f.starts_with(k8s_dir()) {
            continue;
        }
        for (i, d) in docs.iter().enumerate() {
            let at = format!("{} document {}", rel(f), i + 1);
            if d.as_hash().is_none() {
                problems.push(format!("{at}: not a mapping"));
                continue;
            }
            let kind = scalar(&d["kind"]);
            if kind.is_none() {
                problems.push(format!("{at}: no kind"));
            }
            if scalar(&d["apiVersion"]).is_none() {
                problems.push(format!("{at}: no apiVersion"));
            }
            if kind.as_deref() != Some("Kustomization")
                && scalar(&d["metadata"]["name"]).is_none_or(|n| n.is_empty())
            {
                problems.push(format!("{at}: no metadata.name"));
            }
        }
    }
    report("YAML under deploy/", problems);
}

#[test]
fn dockerfile_copies_exist_and_are_not_ignored() {
    let df = Dockerfile::load();
    let ignore = DockerIgnore::load();
    let mut problems = Vec::new();
    for must in [".git", "target", ".tenantry", "crates/gateway/target"] {
        if !ignore.ignored(must) {
            problems.push(format!(
                "deploy/Dockerfile.dockerignore does not exclude {must}"
            ));
        }
    }
    let stages = df.stages();
    let copies = df.copies(false);
    assert!(!copies.is_empty(), "deploy/Dockerfile has no COPY");
    for c in copies {
        let at = format!("deploy/Dockerfile:{}", c.line);
        if let Some(from) = &c.from {
            if !stages.contains(from) {
                problems.push(format!(
                    "{at}: COPY --from={from}: no such stage ({stages:?})"
                ));
            }
            continue;
        }
        if c.sources.is_empty() || c.dest.is_empty() {
            problems.push(format!("{at}: COPY needs a source and a destination"));
        }
        for s in &c.sources {
            if !root().join(s).exists() {
                problems.push(format!(
                    "{at}: COPY {s}: no such file in the build context (the workspace root)"
                ));
            } else if ignore.ignored(s) {
                problems.push(format!(
                    "{at}: COPY {s}: excluded by deploy/Dockerfile.dockerignore"
                ));
            }
        }
    }
    // The build must see every workspace member's manifest.
    let copied: Vec<String> = df
        .copies(false)
        .into_iter()
        .filter(|c| c.from.is_none())
        .flat_map(|c| c.sources)
        .collect();
    for member in ["Cargo.toml", "Cargo.lock", "src", "crates", "bench"] {
        if !copied
            .iter()
            .any(|s| Path::new(member).starts_with(s.trim_end_matches('/')) || s == ".")
        {
            problems.push(format!(
                "deploy/Dockerfile copies no {member}: `cargo build --locked` needs it"
            ));
        }
    }
    let builds = df.instrs.iter().filter(|i| i.op == "RUN").any(|i| {
        let w: Vec<&str> = i.args.split_whitespace().collect();
        w.windows(2).any(|p| p == ["cargo", "build"])
            && w.contains(&"--release")
            && w.contains(&"--locked")
            && w.windows(2).any(|p| p == ["--bin", "tenantry"])
    });
    if !builds {
        problems.push(
            "deploy/Dockerfile does not run `cargo build --release --locked --bin tenantry`".into(),
        );
    }
    match df.last("USER").map(|i| i.args.clone()) {
        None => problems.push("deploy/Dockerfile: the image runs as root (no USER)".into()),
        Some(u) if u.split(':').next().is_some_and(|u| u == "0" || u == "root") => {
            problems.push(format!("deploy/Dockerfile: USER {u} is root"));
        }
        Some(_) => {}
    }
    report("deploy/Dockerfile", problems);
}

#[test]
fn compose_paths_and_dependencies_exist() {
    let compose = Compose::load();
    let services = compose.services();
    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    let volumes: BTreeSet<String> = keys(&compose.doc["volumes"]).into_iter().collect();
    let mut problems = Vec::new();
    for s in &services {
        let at = s.origin();
        if let Some((context, dockerfile)) = s.build() {
            if !context.is_dir() {
                problems.push(format!(
                    "{at}: build context {} does not exist",
                    context.display()
                ));
            }
            if !dockerfile.is_file() {
                problems.push(format!(
                    "{at}: dockerfile {} does not exist",
                    dockerfile.display()
                ));
            }
        }
        for m in s.mounts() {
            match (&m.source, m.bind) {
                (Some(src), true) => {
                    let host = normalize(&deploy_dir().join(src));
                    if !host.exists() {
                        problems.push(format!(
                            "{at}: bind mount {src} -> {}: {} does not exist",
                            m.target,
                            host.display()
                        ));
                    }
                }
                (Some(vol), false) if !volumes.contains(vol) => {
                    problems.push(format!(
                        "{at}: volume {vol} is not declared under the top-level volumes"
                    ));
                }
                _ => {}
            }
        }
        for (dep, condition) in s.depends_on() {
            let Some(target) = services.iter().find(|t| t.name == dep) else {
                problems.push(format!(
                    "{at}: depends_on {dep}: no such service ({names:?})"
                ));
                continue;
            };
            match condition.as_str() {
                "service_healthy"
                    if target.healthcheck().is_none()
                        && !target.runs_our_image(&compose.our_images()) =>
                {
                    problems.push(format!(
                        "{at}: waits for {dep} to be healthy, but {dep} has no healthcheck"
                    ));
                }
                "service_healthy" if target.healthcheck_disabled() => problems.push(format!(
                    "{at}: waits for {dep} to be healthy, but its healthcheck is disabled"
                )),
                "service_completed_successfully"
                    if !matches!(scalar(&target.y["restart"]).as_deref(), None | Some("no")) =>
                {
                    problems.push(format!(
                        "{at}: waits for {dep} to complete, but {dep} restarts"
                    ));
                }
                _ => {}
            }
        }
    }
    report("deploy/compose.yml", problems);
}

/// Every command line that runs tenantry, with where it comes from.
fn tenantry_command_lines() -> Vec<(String, Vec<String>)> {
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

#[test]
fn every_tenantry_command_line_parses() {
    // The check itself: clap must reject what it does not know even with
    // --help after it, or passing here would prove nothing.
    for bad in [
        &["tenantry", "serve", "--no-such-flag"][..],
        &["tenantry", "serve", "--listen", "not-an-address"],
        &["tenantry", "no-such-command"],
        &["tenantry", "apply", "--auto-approve", "extra-positional"],
    ] {
        let argv: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        assert!(
            cli_accepts(&argv).is_err(),
            "{argv:?} --help was accepted: the parser check cannot catch bad flags"
        );
    }
    let lines = tenantry_command_lines();
    let subs: BTreeSet<&str> = lines.iter().filter_map(|(_, a)| subcommand(a)).collect();
    for expected in ["serve", "apply"] {
        assert!(
            subs.contains(expected),
            "no `tenantry {expected}` found under deploy/ (found {subs:?}): the parser misses command lines"
        );
    }
    let mut problems = Vec::new();
    for (origin, argv) in &lines {
        if let Err(e) = cli_accepts(argv) {
            problems.push(format!("{origin}: `{}` is rejected: {e}", argv.join(" ")));
        }
    }
    report("tenantry command lines", problems);
}

#[test]
fn ports_agree_with_listen_and_admin_listen() {
    let df = Dockerfile::load();
    let mut problems = Vec::new();

    // The image.
    let cmd = df.command();
    assert_eq!(
        subcommand(&cmd),
        Some("serve"),
        "the image's default command is not the gateway"
    );
    let image_ports = serve_ports(&cmd, "deploy/Dockerfile CMD", &mut problems);
    if let Some((listen, admin)) = image_ports {
        let exposed = df.exposed();
        let want: BTreeSet<u16> = [listen, admin].into();
        if exposed != want {
            problems.push(format!(
                "deploy/Dockerfile: EXPOSE {exposed:?}, but CMD listens on {want:?}"
            ));
        }
        match df.healthcheck().as_deref().and_then(http_target) {
            Some((port, path)) if port == admin && path == "/readyz" => {}
            Some((port, path)) => problems.push(format!(
                "deploy/Dockerfile: HEALTHCHECK gets :{port}{path}, expected :{admin}/readyz (--admin-listen)"
            )),
            None => problems.push("deploy/Dockerfile: no HEALTHCHECK with an http:// URL".into()),
        }
    }

    // compose.
    let compose = Compose::load();
    let images = compose.our_images();
    for s in compose.services() {
        let argv = s.argv(&df, &images);
        if !is_tenantry(&argv) {
            continue;
        }
        let at = s.origin();
        if subcommand(&argv) != Some("serve") {
            if !s.published().is_empty() {
                problems.push(format!("{at}: publishes ports but runs no server"));
            }
            if !s.healthcheck_disabled() {
                problems.push(format!(
                    "{at}: a one-shot command inherits the image's HEALTHCHECK (/readyz); disable it"
                ));
            }
            continue;
        }
        let Some((listen, admin)) = serve_ports(&argv, &at, &mut problems) else {
            continue;
        };
        let published = s.published();
        if !published.contains(&listen) {
            problems.push(format!(
                "{at}: the API port {listen} (--listen) is not published"
            ));
        }
        for p in &published {
            if *p != listen && *p != admin {
                problems.push(format!(
                    "{at}: publishes container port {p}, which neither --listen ({listen}) nor --admin-listen ({admin}) uses"
                ));
            }
        }
        let check = s.healthcheck().or_else(|| df.healthcheck());
        match check.as_deref().and_then(http_target) {
            Some((port, path)) if port == admin && (path == "/readyz" || path == "/healthz") => {}
            other => problems.push(format!(
                "{at}: healthcheck gets {other:?}, expected port {admin} (--admin-listen), /readyz or /healthz"
            )),
        }
    }

    // Kubernetes.
    let kust = Kustomization::load();
    let objects = kust.objects();
    let wls = workloads(&objects);
    let mut api_ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for w in &wls {
        for (_, c) in w.containers() {
            let argv = container_argv(c, &df);
            if !is_tenantry(&argv) || subcommand(&argv) != Some("serve") {
                continue;
            }
            let at = format!("{} container {}", w.origin(), container_name(c));
            let Some((listen, admin)) = serve_ports(&argv, &at, &mut problems) else {
                continue;
            };
            api_ports.entry(w.name.clone()).or_default().insert(listen);
            let (named, all) = container_ports(c);
            for p in [listen, admin] {
                if !all.contains(&p) {
                    problems.push(format!(
                        "{at}: port {p} is not among its containerPorts {all:?}"
                    ));
                }
            }
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = &c[probe]["httpGet"];
                if get.is_badvalue() {
                    problems.push(format!("{at}: no {probe}.httpGet"));
                    continue;
                }
                let port = resolve_port(&get["port"], &named);
                if port != Some(admin) {
                    problems.push(format!(
                        "{at}: {probe} on port {port:?}, but --admin-listen is {admin}"
                    ));
                }
                if scalar(&get["path"]).as_deref() != Some(path) {
                    problems.push(format!("{at}: {probe} path is not {path}"));
                }
            }
        }
    }
    // Services send traffic to the API port of the pods they select.
    for (file, o) in &objects {
        if scalar(&o["kind"]).as_deref() != Some("Service") {
            continue;
        }
        let at = format!(
            "deploy/k8s/{file} Service {}",
            scalar(&o["metadata"]["name"]).unwrap_or_default()
        );
        let selector = str_map(&o["spec"]["selector"]);
        let targets: Vec<&Workload> = wls
            .iter()
            .filter(|w| {
                !selector.is_empty() && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            })
            .collect();
        if targets.is_empty() {
            problems.push(format!(
                "{at}: its selector {selector:?} matches no pod template"
            ));
        }
        for w in targets {
            let Some(listen) = api_ports.get(&w.name) else {
                continue;
            };
            for p in list(&o["spec"]["ports"]) {
                let target = if p["targetPort"].is_badvalue() {
                    &p["port"]
                } else {
                    &p["targetPort"]
                };
                let ok = list(&w.pod["containers"]).iter().any(|c| {
                    resolve_port(target, &container_ports(c).0).is_some_and(|t| listen.contains(&t))
                });
                if !ok {
                    problems.push(format!(
                        "{at}: targetPort {:?} is not the --listen port {listen:?} of {}",
                        scalar(target),
                        w.origin()
                    ));
                }
            }
        }
    }
    report("ports", problems);
}

#[test]
fn compose_apply_and_gateway_share_the_secrets_directory() {
    let df = Dockerfile::load();
    let compose = Compose::load();
    let images = compose.our_images();
    let service_names: BTreeSet<String> =
        compose.services().iter().map(|s| s.name.clone()).collect();
    let mut problems = Vec::new();
    // Which volume holds the generated passwords in each service that reads
    // an inventory with generated passwords.
    let mut holders: Vec<(String, String, String)> = Vec::new();
    for s in compose.services() {
        let argv = s.argv(&df, &images);
        if !is_tenantry(&argv) || !matches!(subcommand(&argv), Some("serve" | "apply")) {
            continue;
        }
        let at = s.origin();
        let config = flag(&argv, "--config").or_else(|| flag(&argv, "-c"));
        let config = normalize(
            &df.workdir()
                .join(config.unwrap_or_else(|| "tenants.toml".into())),
        );
        let mounts = s.mounts();
        // Where that file comes from: a bind mount, else the image's COPY.
        let host = match mounts
            .iter()
            .find(|m| m.bind && Path::new(&m.target) == config)
        {
            Some(m) => normalize(&deploy_dir().join(m.source.as_deref().unwrap())),
            None => {
                let copied = df
                    .copies(true)
                    .into_iter()
                    .find(|c| c.from.is_none() && normalize(&df.workdir().join(&c.dest)) == config);
                match copied {
                    Some(c) => root().join(&c.sources[0]),
                    None => {
                        problems.push(format!(
                            "{at}: --config {} is neither bind-mounted nor copied into the image",
                            config.display()
                        ));
                        continue;
                    }
                }
            }
        };
        let inv = Inventory::from_str_with(&read(&host), &config, &|_| Some("placeholder".into()))
            .unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        // The admin URL must point at a service of this file, not the
        // inventory's localhost.
        match s.env().get(ADMIN_URL_ENV).and_then(|u| url_host(u)) {
            Some(h) if service_names.contains(&h) => {}
            other => problems.push(format!(
                "{at}: {ADMIN_URL_ENV} host {other:?} is not a service of deploy/compose.yml"
            )),
        }
        let generated = inv
            .tenants
            .iter()
            .flat_map(|t| &t.users)
            .any(|u| matches!(u.password, PasswordSource::Generated { .. }));
        if !generated {
            continue;
        }
        let secrets = &inv.paths.secrets;
        let holder = mounts
            .iter()
            .filter(|m| secrets.starts_with(&m.target))
            .max_by_key(|m| m.target.len());
        match holder {
            Some(m) if !m.bind && m.source.is_some() => {
                holders.push((s.name.clone(), m.source.clone().unwrap(), m.target.clone()));
            }
            _ => problems.push(format!(
                "{at}: the secrets directory {} is on no named volume: generated passwords would not outlive the container",
                secrets.display()
            )),
        }
    }
    let services: BTreeSet<&str> = holders.iter().map(|(s, _, _)| s.as_str()).collect();
    for needed in ["apply", "gateway"] {
        if !services.contains(needed) {
            problems.push(format!(
                "service {needed}: does not keep generated passwords on a named volume"
            ));
        }
    }
    let vols: BTreeSet<&str> = holders.iter().map(|(_, v, _)| v.as_str()).collect();
    if vols.len() > 1 {
        problems.push(format!(
            "apply and gateway keep the secrets on different volumes {vols:?}: the gateway would not see what apply generated"
        ));
    }
    // The non-root user can only write an empty named volume if the image
    // created the mount point as its own (Docker copies owner and mode).
    let runs: Vec<&Instr> = df.final_stage().iter().filter(|i| i.op == "RUN").collect();
    for (_, _, target) in &holders {
        if !runs.iter().any(|r| r.args.contains(target.as_str())) {
            problems.push(format!(
                "deploy/Dockerfile: no RUN creates {target} for the non-root user, so the volume mounted there is root's"
            ));
        }
    }
    report("compose secrets volume", problems);
}

#[test]
fn kubernetes_references_resolve() {
    let kust = Kustomization::load();
    let mut problems = Vec::new();
    let resources = kust.resources();
    for r in resources.iter().chain(&kust.generator_files()) {
        if !k8s_dir().join(r).is_file() {
            problems.push(format!("deploy/k8s/kustomization.yaml: {r} does not exist"));
        }
    }
    if resources.iter().any(|r| r.contains("passwords.example")) {
        problems.push(
            "deploy/k8s/kustomization.yaml lists passwords.example.yaml: placeholder passwords would be applied"
                .into(),
        );
    }
    let objects = kust.objects();
    let wls = workloads(&objects);
    let generated = kust.generated_configmaps();
    let examples = example_secrets();
    let inv = k8s_inventory();
    let names_of = |kind: &str| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|(_, o)| scalar(&o["kind"]).as_deref() == Some(kind))
            .filter_map(|(_, o)| scalar(&o["metadata"]["name"]))
            .collect()
    };
    let deployments = names_of("Deployment");
    for w in &wls {
        let at = w.origin();
        let pod_non_root = w.pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
        for v in list(&w.pod["volumes"]) {
            let cm = &v["configMap"];
            if let Some(name) = scalar(&cm["name"]) {
                if !generated.contains_key(&name) && cm["optional"].as_bool() != Some(true) {
                    problems.push(format!(
                        "{at}: ConfigMap {name} is neither generated by kustomization.yaml nor optional"
                    ));
                }
            }
        }
        for (_, c) in w.containers() {
            let cat = format!("{at} container {}", container_name(c));
            if !pod_non_root && c["securityContext"]["runAsNonRoot"].as_bool() != Some(true) {
                problems.push(format!("{cat}: not runAsNonRoot"));
            }
            for m in list(&c["volumeMounts"]) {
                let n = scalar(&m["name"]).unwrap_or_default();
                if w.volume(&n).is_none() {
                    problems.push(format!(
                        "{cat}: mounts volume {n}, which the pod does not define"
                    ));
                }
            }
            for (name, key) in secret_refs(c) {
                match (examples.get(&name), &key) {
                    (Some(keys), Some(k)) if !keys.contains(k) => problems.push(format!(
                        "{cat}: reads key {k} of Secret {name}, which passwords.example.yaml does not show"
                    )),
                    (Some(_), _) => {}
                    (None, _) if parse_tenant_secret(&name, &inv).is_some() => {}
                    (None, _) => problems.push(format!(
                        "{cat}: Secret {name} is neither shown in passwords.example.yaml nor a `tenantry env --format k8s-secret` name of a tenant"
                    )),
                }
            }
        }
    }
    for (file, o) in &objects {
        if scalar(&o["kind"]).as_deref() != Some("HorizontalPodAutoscaler") {
            continue;
        }
        let at = format!("deploy/k8s/{file} HorizontalPodAutoscaler");
        let target = &o["spec"]["scaleTargetRef"];
        let name = scalar(&target["name"]).unwrap_or_default();
        if scalar(&target["kind"]).as_deref() != Some("Deployment") || !deployments.contains(&name)
        {
            problems.push(format!(
                "{at}: scales {name}, which is not a Deployment here"
            ));
            continue;
        }
        let cpu = list(&o["spec"]["metrics"])
            .iter()
            .any(|m| scalar(&m["resource"]["name"]).as_deref() == Some("cpu"));
        let w = wls.iter().find(|w| w.name == name).unwrap();
        if cpu
            && list(&w.pod["containers"])
                .iter()
                .any(|c| scalar(&c["resources"]["requests"]["cpu"]).is_none())
        {
            problems.push(format!(
                "{at}: scales on CPU utilisation, but {} has a container without resources.requests.cpu",
                w.origin()
            ));
        }
    }
    report("deploy/k8s references", problems);
}

#[test]
fn kubernetes_inventory_validates_with_its_passwords() {
    let inv = k8s_inventory();
    let vars = password_vars(&inv);
    let mut problems = Vec::new();
    for t in &inv.tenants {
        for u in &t.users {
            if !matches!(u.password, PasswordSource::Env { .. }) {
                problems.push(format!(
                    "deploy/k8s/tenants.toml: user {} gets its password from {}: in a pod only password_env survives a restart",
                    u.name,
                    u.password.describe()
                ));
            }
        }
    }
    let examples = example_secrets();
    match examples.get("tenantry-passwords") {
        Some(keys) if *keys == vars => {}
        Some(keys) => problems.push(format!(
            "deploy/k8s/passwords.example.yaml: tenantry-passwords has {keys:?}, tenants.toml names {vars:?}"
        )),
        None => problems.push("deploy/k8s/passwords.example.yaml: no Secret tenantry-passwords".into()),
    }
    if !examples
        .get("tenantry-admin")
        .is_some_and(|k| k.contains(ADMIN_URL_ENV))
    {
        problems.push(format!(
            "deploy/k8s/passwords.example.yaml: no Secret tenantry-admin with {ADMIN_URL_ENV}"
        ));
    }

    // As the binary sees it: without the variables it must refuse (or the
    // second run would prove nothing), with them it must accept.
    let config = k8s_dir().join("tenants.toml");
    let run = |set: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("validate")
            .arg("--config")
            .arg(&config)
            .env_remove(ADMIN_URL_ENV);
        for v in &vars {
            if set {
                cmd.env(v, "placeholder-password");
            } else {
                cmd.env_remove(v);
            }
        }
        cmd.output().expect("run tenantry validate")
    };
    assert!(
        !vars.is_empty(),
        "deploy/k8s/tenants.toml names no password_env"
    );
    let without = run(false);
    let stderr = String::from_utf8_lossy(&without.stderr);
    if without.status.success() || !vars.iter().all(|v| stderr.contains(v.as_str())) {
        problems.push(format!(
            "tenantry validate without the password variables: exit {:?}, expected a failure naming each of {vars:?}:\n{stderr}",
            without.status.code()
        ));
    }
    let with = run(true);
    if !with.status.success() {
        problems.push(format!(
            "tenantry validate --config deploy/k8s/tenants.toml (variables set) failed:\n{}",
            String::from_utf8_lossy(&with.stderr)
        ));
    }
    // The inventory the image (and compose) carries.
    let out = Command::new(BIN)
        .arg("validate")
        .arg("--config")
        .arg(root().join("tenants.toml"))
        .env_remove(ADMIN_URL_ENV)
        .output()
        .unwrap();
    if !out.status.success() {
        problems.push(format!(
            "tenantry validate --config tenants.toml (copied into the image) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    report("deploy/k8s/tenants.toml", problems);
}

#[test]
fn kubernetes_workloads_read_the_inventory_they_need() {
    let df = Dockerfile::load();
    let kust = Kustomization::load();
    let objects = kust.objects();
    let wls = workloads(&objects);
    let generated = kust.generated_configmaps();
    let examples = example_secrets();
    let inv = k8s_inventory();
    let vars = password_vars(&inv);
    let image_paths = df.copied_paths();
    let mut problems = Vec::new();
    let mut tenant_mode = 0;
    for w in &wls {
        for (_, c) in w.containers() {
            let argv = container_argv(c, &df);
            if !is_tenantry(&argv) {
                continue;
            }
            let at = format!("{} container {}", w.origin(), container_name(c));
            let config = normalize(
                &df.workdir().join(
                    flag(&argv, "--config")
                        .or_else(|| flag(&argv, "-c"))
                        .unwrap_or_else(|| "tenants.toml".into()),
                ),
            );
            let refs = secret_refs(c);
            if let Some((tenant, role)) = w.tenant() {
                // Single-tenant mode: DATABASE_DSN from `tenantry env`'s
                // Secret, and no inventory at --config.
                tenant_mode += 1;
                if subcommand(&argv) != Some("serve") {
                    problems.push(format!(
                        "{at}: a per-tenant workload runs `{}`",
                        argv.join(" ")
                    ));
                }
                let want = tenant_secret_name(tenant, role);
                if !refs.iter().any(|(n, k)| *n == want && k.is_none()) {
                    problems.push(format!(
                        "{at}: labelled tenant {tenant}, role {role}, so envFrom should name the Secret {want} (what `tenantry env {tenant} --role {role} --format k8s-secret` creates); it reads {refs:?}"
                    ));
                }
                match (inv.tenant(tenant), Group::parse(role)) {
                    (None, _) => problems.push(format!(
                        "{at}: tenant {tenant} is not in deploy/k8s/tenants.toml"
                    )),
                    (_, None | Some(Group::Owner)) => problems.push(format!(
                        "{at}: role {role} is not admin, developer or customer"
                    )),
                    (Some(t), Some(g)) if t.users_in(g).next().is_none() => problems.push(format!(
                        "{at}: tenant {tenant} has no {role} user for `tenantry env` to use"
                    )),
                    _ => {}
                }
                if image_paths.iter().any(|p| config.starts_with(p)) {
                    problems.push(format!(
                        "{at}: --config {} is the image's inventory: serve would not run in single-tenant mode",
                        config.display()
                    ));
                }
                if let Some((mount, _)) = covering_mount(c, &config) {
                    problems.push(format!(
                        "{at}: --config {} is under the mount {}: single-tenant mode needs no file there",
                        config.display(),
                        mount.display()
                    ));
                }
                continue;
            }
            // Inventory mode: --config is a file of a generated ConfigMap.
            let from_map = covering_mount(c, &config).and_then(|(mount, m)| {
                let vol = w.volume(&scalar(&m["name"])?)?;
                let files = generated.get(&scalar(&vol["configMap"]["name"])?)?;
                let key = config.strip_prefix(&mount).ok()?.to_str()?.to_owned();
                files
                    .iter()
                    .any(|f| {
                        let k = f.split('=').next().unwrap_or(f);
                        Path::new(k).file_name().and_then(|n| n.to_str()) == Some(key.as_str())
                    })
                    .then_some(())
            });
            if from_map.is_none() {
                problems.push(format!(
                    "{at}: --config {} is not a file of a ConfigMap from kustomization.yaml's configMapGenerator",
                    config.display()
                ));
            }
            // Every password variable of the inventory is in its environment.
            let mut env: BTreeSet<String> = list(&c["env"])
                .iter()
                .filter_map(|e| scalar(&e["name"]))
                .collect();
            for (name, key) in &refs {
                if key.is_none() {
                    env.extend(examples.get(name).cloned().unwrap_or_default());
                }
            }
            let missing: Vec<&String> = vars.iter().filter(|v| !env.contains(*v)).collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{at}: its environment lacks {missing:?} (password_env of tenants.toml)"
                ));
            }
            if matches!(subcommand(&argv), Some("apply" | "migrate")) {
                if !env.contains(ADMIN_URL_ENV) {
                    problems.push(format!("{at}: no {ADMIN_URL_ENV} (Secret tenantry-admin)"));
                }
                // The schema directory must be a plain directory: a ConfigMap
                // volume holds a hidden second copy of each file, and the
                // migration loader walks subdirectories.
                let schema = &inv.paths.schema;
                match covering_mount(c, schema) {
                    None => problems.push(format!(
                        "{at}: [paths] schema {} is on no volume",
                        schema.display()
                    )),
                    Some((mount, m)) => {
                        let vname = scalar(&m["name"]).unwrap_or_default();
                        let vol = w.volume(&vname);
                        if vol.is_some_and(|v| !v["configMap"].is_badvalue()) {
                            problems.push(format!(
                                "{at}: [paths] schema {} is a ConfigMap volume ({}): every migration would be found twice",
                                schema.display(),
                                mount.display()
                            ));
                        }
                        if vol.is_some_and(|v| !v["emptyDir"].is_badvalue())
                            && !list(&w.pod["initContainers"]).iter().any(|ic| {
                                list(&ic["volumeMounts"]).iter().any(|im| {
                                    scalar(&im["name"]).as_deref() == Some(vname.as_str())
                                })
                            })
                        {
                            problems.push(format!(
                                "{at}: [paths] schema {} is an emptyDir no init container fills",
                                schema.display()
                            ));
                        }
                    }
                }
            }
        }
    }
    if tenant_mode == 0 {
        problems.push("deploy/k8s: no per-tenant workload (label tenantry.dev/tenant)".into());
    }
    report("deploy/k8s workloads", problems);
}

#[test]
fn kubernetes_pools_fit_the_connection_limits() {
    let df = Dockerfile::load();
    let kust = Kustomization::load();
    let objects = kust.objects();
    let wls = workloads(&objects);
    let inv = k8s_inventory();
    // Most replicas of each Deployment: the HPA's maxReplicas, or replicas.
    let mut max_replicas: BTreeMap<String, i64> =
        wls.iter().map(|w| (w.name.clone(), w.replicas)).collect();
    for (_, o) in &objects {
        if scalar(&o["kind"]).as_deref() == Some("HorizontalPodAutoscaler") {
            if let (Some(name), Some(max)) = (
                scalar(&o["spec"]["scaleTargetRef"]["name"]),
                o["spec"]["maxReplicas"].as_i64(),
            ) {
                max_replicas.insert(name, max);
            }
        }
    }
    // Connections each tenant's users may see at once, and from whom.
    let mut load: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    let mut problems = Vec::new();
    for w in &wls {
        let replicas = max_replicas[&w.name];
        for (_, c) in w.containers() {
            let argv = container_argv(c, &df);
            if !is_tenantry(&argv) || subcommand(&argv) != Some("serve") {
                continue;
            }
            match w.tenant() {
                Some((tenant, _)) => {
                    let pool = match flag(&argv, "--pool-size").map(|p| p.parse::<i64>()) {
                        None => DEFAULT_SINGLE_POOL,
                        Some(Ok(p)) => p,
                        Some(Err(e)) => {
                            problems.push(format!("{}: --pool-size: {e}", w.origin()));
                            continue;
                        }
                    };
                    load.entry(tenant.to_owned()).or_default().push((
                        format!("{} ({replicas} x --pool-size {pool})", w.name),
                        replicas * pool,
                    ));
                }
                None => {
                    for t in &inv.tenants {
                        let pool = i64::from(inv.tier(t).pool_size);
                        load.entry(t.name.to_string()).or_default().push((
                            format!("{} ({replicas} replicas x pool_size {pool})", w.name),
                            replicas * pool,
                        ));
                    }
                }
            }
        }
    }
    assert!(
        !load.is_empty(),
        "no `tenantry serve` workload found in deploy/k8s"
    );
    for (tenant, users) in &load {
        let Some(t) = inv.tenant(tenant) else {
            continue; // reported by kubernetes_workloads_read_the_inventory_they_need
        };
        let tier = inv.tier(t);
        let total: i64 = users.iter().map(|(_, n)| n).sum();
        if total > i64::from(tier.connection_limit) {
            problems.push(format!(
                "tenant {tenant}: up to {total} connections per user ({}), but plan {} has connection_limit {}",
                users.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(" + "),
                tier.name,
                tier.connection_limit
            ));
        }
    }
    report("connection budgets", problems);
}

#[test]
fn the_test_helpers_catch_what_they_should() {
    // A few negative cases of the parsers above, so a check cannot pass
    // because its parser quietly found nothing.
    let df = Dockerfile::parse(
        "FROM a AS build\nRUN x \\\n  # comment\n  && y\nFROM b\nCOPY --from=build /o /p\nCOPY --chown=1:1 src dst/\nEXPOSE 1 2/tcp\nHEALTHCHECK --interval=1s CMD curl http://127.0.0.1:2/readyz\nCMD [\"tenantry\", \"serve\"]\n",
    );
    assert_eq!(df.instrs[1].args, "x && y");
    assert_eq!(df.stages(), ["build"]);
    assert_eq!(df.exposed(), [1, 2].into());
    assert_eq!(df.command(), ["tenantry", "serve"]);
    assert_eq!(
        http_target(&df.healthcheck().unwrap()),
        Some((2, "/readyz".to_owned()))
    );
    let copies = df.copies(true);
    assert_eq!(copies[0].from.as_deref(), Some("build"));
    assert_eq!(
        (copies[1].sources.clone(), copies[1].dest.clone()),
        (vec!["src".to_owned()], "dst/".to_owned())
    );
    assert_eq!(df.copied_paths(), [PathBuf::from("/dst/src")]);

    let ignore = DockerIgnore {
        patterns: vec!["target".into(), "**/*.env".into(), "**/.tenantry".into()],
    };
    assert!(ignore.ignored("target") && ignore.ignored("target/x"));
    assert!(!ignore.ignored("crates/target") && !ignore.ignored("src"));
    assert!(
        ignore.ignored("deploy/building.env") && !ignore.ignored("deploy/tenantry.env.example")
    );
    assert!(ignore.ignored("a/.tenantry/secrets"));

    let argv: Vec<String> = [
        "tenantry",
        "serve",
        "--listen=127.0.0.1:1",
        "--admin-listen",
        "0.0.0.0:2",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(flag(&argv, "--listen").as_deref(), Some("127.0.0.1:1"));
    let mut problems = Vec::new();
    assert_eq!(serve_ports(&argv, "t", &mut problems), None);
    assert!(problems[0].contains("loopback"), "{problems:?}");

    assert_eq!(url_host("postgres://u:p@db:5432/x").as_deref(), Some("db"));
    assert_eq!(url_host("postgres://db/x").as_deref(), Some("db"));
    assert_eq!(
        tenant_secret_name("building_shop", "admin"),
        "tenantry-building-shop-admin"
    );
    let docs = YamlLoader::load_from_str("a: 1\n---\nb: 2\n---\n").unwrap();
    assert_eq!(docs.iter().filter(|d| !d.is_null()).count(), 2);
}
