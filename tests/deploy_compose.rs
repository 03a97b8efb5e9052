//! deploy/compose.yml agrees with the repository and itself: paths, volumes
//! and dependencies exist, and the services that apply and serve share the
//! generated passwords. Command lines and ports: deploy_commands.rs.
//! No Docker needed; each test collects every problem and fails once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::deploy::*;
use tenantry_manifest::{Inventory, PasswordSource, ADMIN_URL_ENV};

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
