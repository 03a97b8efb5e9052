//! deploy/k8s/, parsed: the kustomization's objects, workloads and their
//! containers (command lines, ports, mounts, Secrets), the example Secrets
//! and the k8s inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tenantry_manifest::{Group, Inventory, PasswordSource, ADMIN_URL_ENV};
use yaml_rust2::Yaml;

use super::*;

pub struct Kustomization {
    pub y: Yaml,
}

impl Kustomization {
    pub fn load() -> Kustomization {
        let mut docs = yaml_docs_ok(&k8s_dir().join("kustomization.yaml"));
        assert_eq!(docs.len(), 1, "kustomization.yaml: expected one document");
        Kustomization { y: docs.remove(0) }
    }

    pub fn resources(&self) -> Vec<String> {
        strings(&self.y["resources"])
    }

    /// ConfigMap name -> the files (keys) it holds, from configMapGenerator.
    pub fn generated_configmaps(&self) -> BTreeMap<String, Vec<String>> {
        list(&self.y["configMapGenerator"])
            .iter()
            .filter_map(|g| Some((scalar(&g["name"])?, strings(&g["files"]))))
            .collect()
    }

    /// Files named by every generator (`key=path` gives `path`).
    pub fn generator_files(&self) -> Vec<String> {
        ["configMapGenerator", "secretGenerator"]
            .iter()
            .flat_map(|g| list(&self.y[*g]))
            .flat_map(|g| strings(&g["files"]))
            .map(|f| f.split_once('=').map_or(f.clone(), |(_, p)| p.to_owned()))
            .collect()
    }

    /// The objects of every listed resource, with their file.
    pub fn objects(&self) -> Vec<(String, Yaml)> {
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
pub fn example_secrets() -> BTreeMap<String, BTreeSet<String>> {
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
pub fn tenant_secret_name(tenant: &str, role: &str) -> String {
    format!("tenantry-{}-{role}", tenant.replace('_', "-"))
}

/// `(tenant, role)` of a name following that rule, for a tenant of `inv`.
pub fn parse_tenant_secret(name: &str, inv: &Inventory) -> Option<(String, Group)> {
    inv.tenants.iter().find_map(|t| {
        Group::MEMBERS.into_iter().find_map(|g| {
            (tenant_secret_name(t.name.as_str(), g.as_str()) == name)
                .then(|| (t.name.to_string(), g))
        })
    })
}

/// A Deployment or Job: its pod template.
pub struct Workload<'a> {
    pub file: String,
    pub kind: String,
    pub name: String,
    pub replicas: i64,
    pub labels: BTreeMap<String, String>,
    pub pod: &'a Yaml,
}

impl Workload<'_> {
    pub fn origin(&self) -> String {
        format!("deploy/k8s/{} {} {}", self.file, self.kind, self.name)
    }

    pub fn containers(&self) -> impl Iterator<Item = (bool, &Yaml)> {
        list(&self.pod["initContainers"])
            .iter()
            .map(|c| (true, c))
            .chain(list(&self.pod["containers"]).iter().map(|c| (false, c)))
    }

    /// Single-tenant mode: labelled with its tenant.
    pub fn tenant(&self) -> Option<(&str, &str)> {
        Some((
            self.labels.get("tenantry.dev/tenant")?.as_str(),
            self.labels.get("tenantry.dev/role")?.as_str(),
        ))
    }

    pub fn volume(&self, name: &str) -> Option<&Yaml> {
        list(&self.pod["volumes"])
            .iter()
            .find(|v| scalar(&v["name"]).as_deref() == Some(name))
    }
}

pub fn workloads(objects: &[(String, Yaml)]) -> Vec<Workload<'_>> {
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
pub fn container_argv(c: &Yaml, image: &Dockerfile) -> Vec<String> {
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

pub fn container_name(c: &Yaml) -> String {
    scalar(&c["name"]).unwrap_or_default()
}

/// containerPort by name, and every containerPort.
pub fn container_ports(c: &Yaml) -> (BTreeMap<String, u16>, BTreeSet<u16>) {
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
pub fn resolve_port(y: &Yaml, named: &BTreeMap<String, u16>) -> Option<u16> {
    match y {
        Yaml::Integer(i) => u16::try_from(*i).ok(),
        Yaml::String(s) => s.parse().ok().or_else(|| named.get(s).copied()),
        _ => None,
    }
}

/// The mount (path, volume) of `c` that holds `path`: the longest mountPath
/// that is `path` or one of its parents.
pub fn covering_mount<'y>(c: &'y Yaml, path: &Path) -> Option<(PathBuf, &'y Yaml)> {
    list(&c["volumeMounts"])
        .iter()
        .filter_map(|m| Some((PathBuf::from(scalar(&m["mountPath"])?), m)))
        .filter(|(p, _)| path.starts_with(p))
        .max_by_key(|(p, _)| p.components().count())
}

/// Secret names a container reads (envFrom and valueFrom), with the keys
/// read one by one.
pub fn secret_refs(c: &Yaml) -> Vec<(String, Option<String>)> {
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
pub fn k8s_inventory() -> Inventory {
    let path = k8s_dir().join("tenants.toml");
    Inventory::from_str_with(&read(&path), &path, &|name| {
        (name != ADMIN_URL_ENV).then(|| "placeholder-password-of-32-chars".to_owned())
    })
    .unwrap_or_else(|e| panic!("deploy/k8s/tenants.toml: {e}"))
}

/// The password variables an inventory names, sorted.
pub fn password_vars(inv: &Inventory) -> BTreeSet<String> {
    inv.tenants
        .iter()
        .flat_map(|t| {
            t.users
                .iter()
                .map(|u| &u.password)
                .chain([&t.gateway.password])
        })
        .filter_map(|source| match source {
            PasswordSource::Env { var } => Some(var.clone()),
            _ => None,
        })
        .collect()
}
