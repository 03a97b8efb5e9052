//! What cuts across deploy/: every YAML file parses, every command line that
//! runs tenantry (image, compose, k8s) is accepted by the real parser, the
//! ports agree with --listen/--admin-listen everywhere, and the deploy
//! helpers (tests/common/deploy) catch what they should. One file kind alone:
//! deploy_docker.rs, deploy_compose.rs, deploy_k8s.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::deploy::*;
use yaml_rust2::YamlLoader;

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
