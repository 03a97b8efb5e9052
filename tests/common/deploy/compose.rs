//! deploy/compose.yml, parsed: services, their mounts, dependencies,
//! healthchecks and command lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use yaml_rust2::Yaml;

use super::*;

pub struct Mount {
    /// A host path (bind mount) or a volume name.
    pub source: Option<String>,
    pub target: String,
    pub bind: bool,
}

pub struct Service<'a> {
    pub name: String,
    pub y: &'a Yaml,
}

impl Service<'_> {
    pub fn origin(&self) -> String {
        format!("deploy/compose.yml service {}", self.name)
    }

    /// Whether it runs the image of deploy/Dockerfile (built from it, or the
    /// same image name as a service that is).
    pub fn runs_our_image(&self, images: &BTreeSet<String>) -> bool {
        self.builds_our_dockerfile()
            || scalar(&self.y["image"]).is_some_and(|i| images.contains(&i))
    }

    pub fn build(&self) -> Option<(PathBuf, PathBuf)> {
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

    pub fn builds_our_dockerfile(&self) -> bool {
        self.build().is_some_and(|(_, d)| d == Dockerfile::path())
    }

    /// The command it runs: its own, or the image's.
    pub fn argv(&self, image: &Dockerfile, images: &BTreeSet<String>) -> Vec<String> {
        match &self.y["command"] {
            Yaml::Array(_) => strings(&self.y["command"]),
            Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            _ if self.runs_our_image(images) => image.command(),
            _ => Vec::new(),
        }
    }

    pub fn mounts(&self) -> Vec<Mount> {
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

    pub fn env(&self) -> BTreeMap<String, String> {
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

    pub fn healthcheck_disabled(&self) -> bool {
        let h = &self.y["healthcheck"];
        h["disable"].as_bool() == Some(true)
            || strings(&h["test"]).first().map(String::as_str) == Some("NONE")
    }

    /// The healthcheck's command (`CMD`/`CMD-SHELL` dropped), if it has one.
    pub fn healthcheck(&self) -> Option<Vec<String>> {
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
    pub fn depends_on(&self) -> Vec<(String, String)> {
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
    pub fn published(&self) -> Vec<u16> {
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

pub struct Compose {
    pub doc: Yaml,
}

impl Compose {
    pub fn load() -> Compose {
        let path = deploy_dir().join("compose.yml");
        let mut docs = yaml_docs_ok(&path);
        assert_eq!(docs.len(), 1, "deploy/compose.yml: expected one document");
        Compose {
            doc: docs.remove(0),
        }
    }

    pub fn services(&self) -> Vec<Service<'_>> {
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
    pub fn our_images(&self) -> BTreeSet<String> {
        self.services()
            .iter()
            .filter(|s| s.builds_our_dockerfile())
            .filter_map(|s| scalar(&s.y["image"]))
            .collect()
    }
}
