//! deploy/Dockerfile agrees with the repository: what it copies exists and
//! is not excluded by the .dockerignore, it builds the binary with
//! `--locked`, and the image does not run as root. What the image runs and
//! listens on is checked with the other command lines (deploy_commands.rs).
//! No Docker needed; each test collects every problem and fails once.

mod common;

use std::path::Path;

use common::deploy::*;

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
