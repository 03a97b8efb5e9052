//! `tenantry servers` over a fleet of three servers: two real throwaway
//! clusters (one holding a tenant, one empty and draining) and one that
//! cannot be reached. Every server is reported; the unreachable one is named
//! and makes the command exit 1.

mod common;

use common::{fixture_schema, own_cluster, Admin, Fleet};

#[test]
fn servers_reports_each_server_and_names_the_unreachable_one() {
    let f = Fleet::new(Admin::Superuser);
    f.write("[tenants.{p}_shop]\nplan = \"starter\"\n");
    f.apply().ok();
    let other = own_cluster(&[]);
    let config = f.dir.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            r#"fleet = "{p}"

[paths]
schema = "{schema}"

[servers.a]
admin_url = "{a}"
max_tenants = 10

[servers.b]
admin_url = "{b}"
status = "draining"

[servers.c]
admin_url = "postgres://nobody@127.0.0.1:1/postgres?connect_timeout=2"

[plans.starter]
connection_limit = 5
statement_timeout = "5s"
pool_size = 2
requests_per_second = 20

[tenants.{p}_shop]
plan = "starter"
"#,
            p = f.p,
            schema = fixture_schema().display(),
            a = f.admin_url,
            b = other.url("postgres"),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("TENANTRY_ADMIN_URL")
            .env_remove("TENANTRY_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run(&["servers", "--json"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("1 of 3 servers could not be read: c"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let by_name = |n: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {report}"))
            .clone()
    };
    let a = by_name("a");
    assert_eq!(a["tenants"], 1, "{a}");
    assert_eq!(a["status"], "active");
    assert!(a["version"].as_str().unwrap().starts_with("15"), "{a}");
    assert!(a["tenant_bytes"].as_i64().unwrap() > 1_000_000, "{a}");
    assert!(a["connections"].as_i64().unwrap() >= 1, "{a}");
    assert!(a["max_connections"].as_i64().unwrap() > 0, "{a}");
    let b = by_name("b");
    assert_eq!(
        (b["tenants"].clone(), b["status"].clone()),
        (0.into(), "draining".into()),
        "{b}"
    );
    assert!(b["other_databases"].as_i64().unwrap() >= 1, "{b}");
    let c = by_name("c");
    assert!(
        c["unreachable"].as_str().unwrap().contains("127.0.0.1:1"),
        "{c}"
    );

    // The table names every server too, with the room left on each.
    let (code, stdout, _) = run(&["servers"]);
    assert_eq!(code, Some(1));
    let line = |n: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("{n} in {stdout}"))
            .to_owned()
    };
    assert!(line("a").trim_end().ends_with(" 9"), "{stdout}");
    assert!(line("b").trim_end().ends_with(" 0"), "{stdout}");
    assert!(line("c").contains("unreachable: "), "{stdout}");
}
