//! The gateway end to end: the real binary serving real HTTP over real
//! PostgreSQL. Routing by Host and custom domain, tokens per tenant and role,
//! tiers enforced by the database, suspension, reload while serving, a
//! connection budget smaller than the fleet, a tenant whose database is down,
//! rate limits, single-tenant DSN mode, and metrics.

mod common;

use common::gateway::{http, token, Gateway};
use common::{Admin, Fleet};

/// A self-signed certificate for localhost (PEM), made with openssl.
fn self_signed(cert: &std::path::Path, key: &std::path::Path) {
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// The two tenants of the other tests, the shop with a custom domain too.
fn tenants() -> String {
    common::TWO_TENANTS.replace(
        "subdomain = \"{p}-shop\"",
        "subdomain = \"{p}-shop\"\ndomains = [\"shop.{p}.example\"]",
    )
}

#[test]
fn routing_tokens_and_tiers() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&tenants());
    f.apply().ok();
    let shop_dev = token(&f, "{p}_shop", "developer");
    let shop_cust = token(&f, "{p}_shop", "customer");
    let shop_admin = token(&f, "{p}_shop", "admin");
    let cafe_admin = token(&f, "{p}_cafe", "admin");
    let g = Gateway::start(&f, &[], &[]);
    let shop = f.name("{p}-shop.localhost");
    let cafe = f.name("{p}-cafe.usualstore.com:4001");

    // Each Host sees its own rows.
    let (s, b) = http(
        &g.api,
        "POST",
        &shop,
        "/api/widgets",
        Some(&shop_dev),
        Some(r#"{"name":"hammer","price":1299,"inventory_level":5}"#),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http(
        &g.api,
        "POST",
        &cafe,
        "/api/widgets",
        Some(&cafe_admin),
        Some(r#"{"name":"latte","price":450}"#),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http(&g.api, "GET", &shop, "/api/widgets", Some(&shop_cust), None);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("hammer") && !b.contains("latte"), "{b}");
    let (s, b) = http(
        &g.api,
        "GET",
        &cafe,
        "/api/widgets",
        Some(&cafe_admin),
        None,
    );
    assert!(
        s == 200 && b.contains("latte") && !b.contains("hammer"),
        "{s} {b}"
    );
    // Custom domain.
    let (s, b) = http(
        &g.api,
        "GET",
        &f.name("shop.{p}.example"),
        "/api/tenant",
        Some(&shop_cust),
        None,
    );
    assert!(s == 200 && b.contains(&f.name("{p}_shop")), "{s} {b}");
    // Reserved, bare and unknown hosts.
    for host in [
        "www.localhost",
        "localhost",
        "nobody.localhost",
        "127.0.0.1",
    ] {
        let (s, b) = http(&g.api, "GET", host, "/api/widgets", Some(&shop_cust), None);
        assert_eq!(s, 404, "{host}: {b}");
        assert!(b.contains("unknown_tenant"), "{b}");
    }
    // A token of one tenant means nothing to another; none at all is 401 too.
    let (s, b) = http(
        &g.api,
        "GET",
        &cafe,
        "/api/widgets",
        Some(&shop_admin),
        None,
    );
    assert_eq!(s, 401, "{b}");
    assert_eq!(
        http(&g.api, "GET", &shop, "/api/widgets", None, None).0,
        401
    );
    // The database enforces the tiers: customer POST, developer DELETE -> 403.
    let (s, b) = http(
        &g.api,
        "POST",
        &shop,
        "/api/widgets",
        Some(&shop_cust),
        Some(r#"{"name":"x","price":1}"#),
    );
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("permission_denied"), "{b}");
    let (s, b) = http(
        &g.api,
        "DELETE",
        &shop,
        "/api/widgets/1",
        Some(&shop_dev),
        None,
    );
    assert_eq!(s, 403, "{b}");
    let (s, b) = http(
        &g.api,
        "DELETE",
        &shop,
        "/api/widgets/1",
        Some(&shop_admin),
        None,
    );
    assert_eq!(s, 204, "{b}");
    // Revoked tokens stop working (after the cache time; a fresh gateway has none).
    let list = f.tenantry(&["token", "list", &f.name("{p}_shop"), "--json"]);
    let ids: serde_json::Value = serde_json::from_str(list.ok()).unwrap();
    assert_eq!(ids.as_array().unwrap().len(), 3);
    assert!(
        !list.stdout.contains(&shop_dev),
        "token list never shows tokens"
    );
}

#[test]
fn suspension_and_reload_while_serving() {
    let f = Fleet::new(Admin::Superuser);
    let one = tenants()
        .split("[tenants.{p}_cafe]")
        .next()
        .unwrap()
        .to_owned();
    f.write(&one);
    f.apply().ok();
    let shop_cust = token(&f, "{p}_shop", "customer");
    let g = Gateway::start(&f, &[], &[]);
    let shop = f.name("{p}-shop.localhost");
    let cafe = f.name("{p}-cafe.localhost");
    assert_eq!(
        http(&g.api, "GET", &shop, "/api/widgets", Some(&shop_cust), None).0,
        200
    );
    assert_eq!(
        http(&g.api, "GET", &cafe, "/api/widgets", Some(&shop_cust), None).0,
        404
    );

    // Add a tenant: routable without a restart.
    f.write(&tenants());
    f.apply().ok();
    let cafe_admin = token(&f, "{p}_cafe", "admin");
    let wait_for = |host: &str, tok: &str, want: u16| {
        for _ in 0..100 {
            if http(&g.api, "GET", host, "/api/widgets", Some(tok), None).0 == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{host} never answered {want}");
    };
    wait_for(&cafe, &cafe_admin, 200);
    // Suspend it: 403.
    f.write(&tenants().replace(
        "plan = \"starter\"",
        "plan = \"starter\"\nstatus = \"suspended\"",
    ));
    wait_for(&cafe, &cafe_admin, 403);
    // An invalid file keeps the running configuration.
    let refused = g.logged("invalid configuration; keeping the running one");
    std::fs::write(f.config(), "this is not toml [").unwrap();
    g.wait_for_log("invalid configuration; keeping the running one", refused);
    assert_eq!(
        http(&g.api, "GET", &shop, "/api/widgets", Some(&shop_cust), None).0,
        200
    );
    // Remove it: 404, the other keeps serving.
    f.write(&one);
    wait_for(&cafe, &cafe_admin, 404);
    assert_eq!(
        http(&g.api, "GET", &shop, "/api/widgets", Some(&shop_cust), None).0,
        200
    );
}

#[test]
fn a_budget_smaller_than_the_fleet_serves_everyone_and_a_down_tenant_fails_alone() {
    let f = Fleet::new(Admin::Superuser);
    let mut t = String::new();
    for i in 0..12 {
        t.push_str(&format!(
            "[tenants.{{p}}_b{i:02}]\nplan = \"starter\"\nsubdomain = \"{{p}}-b{i:02}\"\ncustomers = [{{ username = \"{{p}}_b{i:02}_c\" }}]\n\n"
        ));
    }
    f.write(&t);
    f.apply().ok();
    let tokens: Vec<String> = (0..12)
        .map(|i| token(&f, &format!("{{p}}_b{i:02}"), "customer"))
        .collect();
    let g = Gateway::start(&f, &["--max-connections", "4"], &[]);
    for round in 0..2 {
        for (i, tok) in tokens.iter().enumerate() {
            let host = f.name(&format!("{{p}}-b{i:02}.localhost"));
            let (s, b) = http(&g.api, "GET", &host, "/api/widgets", Some(tok), None);
            assert_eq!(s, 200, "round {round}, tenant {i}: {b}");
        }
    }
    let metrics = http(&g.admin, "GET", "admin", "/metrics", None, None).1;
    let open: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tenantry_connections_open{server=\"default\"} "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("tenantry_connections_open");
    assert!(open <= 4.0, "budget held: {open}\n{metrics}");
    assert!(
        metrics.contains(&format!("tenant=\"{}\"", f.name("{p}_b07"))),
        "per-tenant metrics"
    );

    // Tenant 3's database goes away: it gets 503s, the others keep answering.
    f.psql("postgres", "ALTER DATABASE {p}_b03 ALLOW_CONNECTIONS false");
    f.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{p}_b03'",
    );
    let down = f.name("{p}-b03.localhost");
    let mut saw_503 = false;
    for _ in 0..3 {
        let (s, b) = http(
            &g.api,
            "GET",
            &down,
            "/api/widgets/1",
            Some(&tokens[3]),
            None,
        );
        if s == 503 {
            saw_503 = true;
            assert!(b.contains("unavailable"), "{b}");
        }
    }
    assert!(
        saw_503,
        "a tenant whose database refuses connections gets 503"
    );
    for (i, tok) in tokens.iter().enumerate().filter(|(i, _)| *i != 3) {
        let host = f.name(&format!("{{p}}-b{i:02}.localhost"));
        assert_eq!(
            http(&g.api, "GET", &host, "/api/widgets", Some(tok), None).0,
            200,
            "tenant {i}"
        );
    }
    let health = http(
        &g.admin,
        "GET",
        "admin",
        &format!("/tenants/{}/health", f.name("{p}_b03")),
        None,
        None,
    );
    assert_eq!(health.0, 503, "{}", health.1);
    // It comes back by itself.
    f.psql("postgres", "ALTER DATABASE {p}_b03 ALLOW_CONNECTIONS true");
    let mut back = false;
    for _ in 0..80 {
        if http(&g.api, "GET", &down, "/api/widgets", Some(&tokens[3]), None).0 == 200 {
            back = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(back, "the tenant recovered without a restart");
    let health = http(
        &g.admin,
        "GET",
        "admin",
        &format!("/tenants/{}/health", f.name("{p}_b03")),
        None,
        None,
    );
    assert_eq!(health.0, 200, "{}", health.1);
}

#[test]
fn rate_limit_and_metrics() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&tenants().replace("requests_per_second = 20", "requests_per_second = 5"));
    f.apply().ok();
    let cafe_admin = token(&f, "{p}_cafe", "admin");
    let g = Gateway::start(&f, &[], &[]);
    let cafe = f.name("{p}-cafe.localhost");
    let statuses: Vec<u16> = (0..30)
        .map(|_| http(&g.api, "GET", &cafe, "/api/tenant", Some(&cafe_admin), None).0)
        .collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let metrics = http(&g.admin, "GET", "admin", "/metrics", None, None).1;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("tenantry_requests_total")
                && l.contains(&f.name("{p}_cafe"))
                && l.contains("\"429\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert_eq!(
        n as usize,
        statuses.iter().filter(|s| **s == 429).count(),
        "{line}"
    );
    assert_eq!(
        http(&g.admin, "GET", "admin", "/healthz", None, None).0,
        200
    );
    assert_eq!(http(&g.admin, "GET", "admin", "/readyz", None, None).0, 200);
}

#[test]
fn single_tenant_mode_from_database_dsn() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&tenants());
    f.apply().ok();
    let tok = token(&f, "{p}_shop", "admin");
    let dsn = f.cluster.user_url(
        &f.name("{p}_shop_a"),
        &f.secret("{p}_shop_a"),
        &f.name("{p}_shop"),
    );
    // No tenants.toml where the gateway runs: the DSN is the whole configuration.
    std::fs::remove_file(f.config()).unwrap();
    let g = Gateway::start(&f, &[], &[("DATABASE_DSN", &dsn)]);
    let (s, b) = http(
        &g.api,
        "POST",
        "anything.example",
        "/api/widgets",
        Some(&tok),
        Some(r#"{"name":"solo","price":1}"#),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http(&g.api, "GET", "whatever", "/api/widgets", Some(&tok), None);
    assert!(s == 200 && b.contains("solo"), "{s} {b}");
    assert_eq!(
        http(
            &g.api,
            "GET",
            "whatever",
            "/api/widgets",
            Some("tnt_wrong"),
            None
        )
        .0,
        401
    );
}

/// The per-tenant container of seed 002: `tenantry env` writes the env file,
/// the gateway started with exactly that environment (and no tenants.toml)
/// serves that tenant, as the login the file carries.
#[test]
fn the_env_file_of_a_tenant_runs_its_single_tenant_gateway() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&tenants());
    f.apply().ok();
    let tok = token(&f, "{p}_shop", "admin");
    let env_file = f.tenantry(&["env", &f.name("{p}_shop"), "--role", "developer"]);
    let vars: Vec<(String, String)> = env_file
        .ok()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["DATABASE_DSN", "TENANT_NAME", "TENANT_SUBDOMAIN"]);
    std::fs::remove_file(f.config()).unwrap();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let g = Gateway::start(&f, &[], &env);
    let (s, b) = http(
        &g.api,
        "POST",
        "any.host",
        "/api/widgets",
        Some(&tok),
        Some(r#"{"name":"from-env","price":5}"#),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http(
        &g.api,
        "GET",
        "other.host",
        "/api/widgets",
        Some(&tok),
        None,
    );
    assert!(s == 200 && b.contains("from-env"), "{s} {b}");
    // The container logs in as the developer: even an admin token cannot
    // DELETE, because the database says no.
    let id = b
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .unwrap()
        .to_owned();
    let (s, b) = http(
        &g.api,
        "DELETE",
        "h",
        &format!("/api/widgets/{id}"),
        Some(&tok),
        None,
    );
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("permission_denied"), "{b}");
}

#[test]
fn https_with_a_pem_certificate() {
    let f = Fleet::new(Admin::Superuser);
    f.write(&tenants());
    f.apply().ok();
    let tok = token(&f, "{p}_cafe", "customer");
    let (cert, key) = (f.dir.path().join("cert.pem"), f.dir.path().join("key.pem"));
    self_signed(&cert, &key);
    let g = Gateway::start(
        &f,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let port = g.api.rsplit(':').next().unwrap();
    let host = f.name("{p}-cafe.localhost");
    let out = std::process::Command::new("curl")
        .args(["-sk", "--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {tok}")])
        .arg(format!("https://{host}:{port}/api/tenant"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains(&f.name("{p}_cafe")),
        "HTTPS answered: {body:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port is not served.
    let (status, _) = http(&g.api, "GET", &host, "/api/tenant", Some(&tok), None);
    assert_ne!(status, 200);
}

#[test]
fn tls_to_postgres_for_the_gateway_and_the_provisioner() {
    // A cluster of its own, with TLS switched on.
    let cluster = tenantry_localpg::Cluster::start_temp().expect("a TLS cluster");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    self_signed(&cert, &key);
    let is_root = String::from_utf8_lossy(
        &std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
        == "0";
    for f in [&cert, &key] {
        if is_root {
            assert!(std::process::Command::new("chown")
                .arg("postgres")
                .arg(f)
                .status()
                .unwrap()
                .success());
        }
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    cluster
        .psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET ssl = on; ALTER SYSTEM SET ssl_cert_file = '{}'; ALTER SYSTEM SET ssl_key_file = '{}'; SELECT pg_reload_conf();
                 CREATE ROLE tls_app LOGIN PASSWORD 'tls-pw'; CREATE ROLE tls_group NOLOGIN; CREATE DATABASE tls_shop OWNER tls_app;",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
    let schema = std::fs::read_to_string(common::fixture_schema().join("V1__store.sql")).unwrap();
    let token = tenantry_layout::tokens::generate();
    let hash = tenantry_layout::tokens::hash(secrecy::ExposeSecret::expose_secret(&token));
    cluster
        .psql(
            "tls_shop",
            &format!(
                "SET ROLE tls_app;\n{schema}\n{};\nINSERT INTO tenantry.tokens (role, hash) VALUES ('admin', '{hash}');",
                tenantry_layout::tokens::setup_for(&["tls_group"], None, &[]).join(";\n")
            ),
        )
        .unwrap();
    let dsn = format!(
        "{}?sslmode=require",
        cluster.user_url("tls_app", "tls-pw", "tls_shop")
    );

    let f = Fleet::new(Admin::Superuser); // only for running the binary (no tenants.toml)
    let g = Gateway::start(&f, &[], &[("DATABASE_DSN", &dsn)]);
    let tok = secrecy::ExposeSecret::expose_secret(&token).to_owned();
    let (s, b) = http(
        &g.api,
        "POST",
        "any",
        "/api/widgets",
        Some(&tok),
        Some(r#"{"name":"sealed","price":1}"#),
    );
    assert_eq!(s, 201, "{b}");
    let encrypted = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'tenantry gateway'",
        )
        .unwrap();
    assert_ne!(encrypted.trim(), "0", "the gateway's connections use TLS");
    let plain = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE NOT s.ssl AND a.application_name = 'tenantry gateway'",
        )
        .unwrap();
    assert_eq!(plain.trim(), "0");

    // The provisioner speaks TLS too when its admin URL requires it.
    let inv = dir.path().join("tenants.toml");
    std::fs::write(
        &inv,
        format!(
            "fleet = \"tls\"\n[paths]\nschema = \"{}\"\n[plans.p]\nconnection_limit = 2\nstatement_timeout = \"1s\"\npool_size = 1\nrequests_per_second = 1\n[tenants.tls_cafe]\nplan = \"p\"\nadmins = [{{ username = \"tls_cafe_a\" }}]\n",
            common::fixture_schema().display()
        ),
    )
    .unwrap();
    let admin_url = format!("{}?sslmode=require", cluster.url("postgres"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "apply",
            "--auto-approve",
            "--admin-url",
            &admin_url,
            "--config",
        ])
        .arg(&inv)
        .env_remove("TENANTRY_ADMIN_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apply over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cluster
            .psql("tls_cafe", "SELECT count(*) FROM widgets")
            .unwrap()
            .trim(),
        "0"
    );
}

/// A tenant whose gateway login takes its password from a variable
/// (`gateway_password_env`, for pods that share no disk with apply): apply
/// sets it from the variable and generates no file, the gateway logs in
/// with it, and rotate re-reads it.
#[test]
fn a_gateway_password_from_the_environment() {
    let f = Fleet::new(Admin::Superuser);
    f.write(
        "[tenants.{p}_envgw]\nplan = \"starter\"\nsubdomain = \"{p}-envgw\"\ngateway_password_env = \"ENVGW_GATEWAY_PASSWORD\"\n",
    );
    let var = [(
        "ENVGW_GATEWAY_PASSWORD",
        "first-gateway-password-0123456789",
    )];
    let refused = f.tenantry(&["apply", "--auto-approve"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains(
            "environment variable ENVGW_GATEWAY_PASSWORD (gateway_password_env) is not set"
        ),
        "{}",
        refused.all()
    );
    f.tenantry_env(&["apply", "--auto-approve"], &var).ok();
    let generated = f
        .dir
        .path()
        .join(".tenantry/secrets")
        .join(f.name("{p}_envgw_gateway"));
    assert!(
        !generated.exists(),
        "nothing generated: {}",
        generated.display()
    );
    let tok = f
        .tenantry_env(
            &[
                "token",
                "create",
                &f.name("{p}_envgw"),
                "--role",
                "customer",
            ],
            &var,
        )
        .ok()
        .trim()
        .to_owned();
    let g = Gateway::start(&f, &[], &var);
    let host = f.name("{p}-envgw.localhost");
    let (status, body) = g.get(&host, &tok);
    assert_eq!(status, 200, "{body}");
    drop(g);

    // A new value: plan shows the change, rotate sets it, a gateway
    // started with it serves.
    let var = [(
        "ENVGW_GATEWAY_PASSWORD",
        "second-gateway-password-0123456789",
    )];
    let plan = f.tenantry_env(&["plan", "--detailed-exitcode"], &var);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let rotated = f.tenantry_env(&["rotate", &f.name("{p}_envgw")], &var);
    assert!(
        rotated
            .ok()
            .contains("re-read from env ENVGW_GATEWAY_PASSWORD and set"),
        "{}",
        rotated.stdout
    );
    let plan = f.tenantry_env(&["plan", "--detailed-exitcode"], &var);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let g = Gateway::start(&f, &[], &var);
    let (status, body) = g.get(&host, &tok);
    assert_eq!(status, 200, "{body}");
}
