//! deploy/Dockerfile and deploy/Dockerfile.dockerignore, parsed: stages,
//! COPY, EXPOSE, HEALTHCHECK, USER and the image's command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

pub struct Instr {
    pub line: usize,
    pub op: String,
    pub args: String,
}

pub struct CopyInstr {
    pub line: usize,
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

pub struct Dockerfile {
    pub instrs: Vec<Instr>,
}

impl Dockerfile {
    pub fn path() -> PathBuf {
        deploy_dir().join("Dockerfile")
    }

    pub fn load() -> Dockerfile {
        Dockerfile::parse(&read(&Dockerfile::path()))
    }

    /// Instructions with their continuation lines joined; comments dropped.
    pub fn parse(text: &str) -> Dockerfile {
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
    pub fn final_stage(&self) -> &[Instr] {
        let start = self
            .instrs
            .iter()
            .rposition(|i| i.op == "FROM")
            .map_or(0, |p| p + 1);
        &self.instrs[start..]
    }

    pub fn last<'a>(&'a self, op: &str) -> Option<&'a Instr> {
        self.final_stage().iter().rev().find(|i| i.op == op)
    }

    /// Exec form (a JSON array) or shell form, as words.
    pub fn words(args: &str) -> Vec<String> {
        if args.trim_start().starts_with('[') {
            serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form {args:?}: {e}"))
        } else {
            args.split_whitespace().map(str::to_owned).collect()
        }
    }

    /// ENTRYPOINT + CMD of the image.
    pub fn command(&self) -> Vec<String> {
        let mut argv = self
            .last("ENTRYPOINT")
            .map_or(Vec::new(), |i| Dockerfile::words(&i.args));
        argv.extend(
            self.last("CMD")
                .map_or(Vec::new(), |i| Dockerfile::words(&i.args)),
        );
        argv
    }

    pub fn exposed(&self) -> BTreeSet<u16> {
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
    pub fn healthcheck(&self) -> Option<Vec<String>> {
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

    pub fn workdir(&self) -> PathBuf {
        self.last("WORKDIR")
            .map_or(PathBuf::from("/"), |i| PathBuf::from(&i.args))
    }

    /// Stage names (`FROM image AS name`).
    pub fn stages(&self) -> Vec<String> {
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

    pub fn copies(&self, final_only: bool) -> Vec<CopyInstr> {
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
    pub fn copied_paths(&self) -> Vec<PathBuf> {
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
pub struct DockerIgnore {
    pub patterns: Vec<String>,
}

impl DockerIgnore {
    pub fn load() -> DockerIgnore {
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
    pub fn glob(pattern: &str, name: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == name,
            Some((pre, post)) => {
                name.len() >= pre.len() + post.len()
                    && name.starts_with(pre)
                    && DockerIgnore::glob_tail(post, &name[pre.len()..])
            }
        }
    }

    pub fn glob_tail(pattern: &str, rest: &str) -> bool {
        (0..=rest.len())
            .filter(|&i| rest.is_char_boundary(i))
            .any(|i| DockerIgnore::glob(pattern, &rest[i..]))
    }

    pub fn ignored(&self, path: &str) -> bool {
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
