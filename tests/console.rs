//! The operators' console in a real browser: headless Chromium loads the
//! admin listener's `/` and a tenant's page from a gateway serving three
//! tenants with traffic; the rendered DOM must hold every tenant's row, the
//! warning of the one near its quota and the charts. A screenshot goes to
//! `target/console.png` for people to look at. Also: the admin token, asked
//! of every console route but `/healthz` and `/readyz`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{http, http_with_headers, token, Gateway};
use common::{Admin, Fleet};

/// Debian's `chromium`; under CI (which installs it) its absence fails.
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        });
        if found.is_some() {
            return found;
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed (.ci/run installs it)"
    );
    eprintln!("skipped: chromium is not installed (apt-get install chromium)");
    None
}

/// Runs headless Chromium with `args` on `url` (its own profile), killed
/// past a minute; its stdout.
fn browse(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Give the page's script time to run its first refresh.
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium took over a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

const THREE: &str = r#"
[plans.metered]
connection_limit = 10
statement_timeout = "5s"
pool_size = 2
requests_per_second = 1000
requests_per_day = 10

[tenants.{p}_shop]
plan = "professional"
subdomain = "{p}-shop"
display_name = "Shop & <Sons>"
admins = [{ username = "{p}_shop_a" }]

[tenants.{p}_cafe]
plan = "metered"
subdomain = "{p}-cafe"
admins = [{ username = "{p}_cafe_a" }]

[tenants.{p}_mill]
plan = "starter"
subdomain = "{p}-mill"
admins = [{ username = "{p}_mill_a" }]
"#;

#[test]
fn the_console_shows_every_tenant_its_warnings_and_charts_in_a_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let f = Fleet::new(Admin::Superuser);
    f.write(THREE);
    f.apply().ok();
    let g = Gateway::start(&f, &["--usage-flush-interval", "200ms"], &[]);
    // Traffic on every tenant; the cafe to 90% of its day's quota.
    for (tenant, host, n) in [
        ("{p}_shop", "{p}-shop.localhost", 5),
        ("{p}_cafe", "{p}-cafe.localhost", 9),
        ("{p}_mill", "{p}-mill.localhost", 2),
    ] {
        let t = token(&f, tenant, "admin");
        for i in 0..n {
            let (s, b) = if i == 0 {
                http(
                    &g.api,
                    "POST",
                    &f.name(host),
                    "/api/widgets",
                    Some(&t),
                    Some(r#"{"name":"w","price":1}"#),
                )
            } else {
                g.get(&f.name(host), &t)
            };
            assert!(s == 200 || s == 201, "{s} {b}");
        }
    }
    let cafe = f.name("{p}_cafe");
    // The API writes reach the trail (the tenant page shows them).
    assert!(common::wait_until(Duration::from_secs(30), || {
        f.tenantry(&["audit", &cafe, "--json"])
            .stdout
            .contains("api.write")
    }));

    let profile = tempfile::tempdir().unwrap();
    let fleet_url = format!("http://{}/", g.admin);
    let dom = browse(&browser, profile.path(), &["--dump-dom"], &fleet_url);
    for tenant in ["{p}_shop", "{p}_cafe", "{p}_mill"] {
        assert!(
            dom.contains(&format!("data-tenant=\"{}\"", f.name(tenant))),
            "no row for {tenant}:\n{dom}"
        );
    }
    // The display name is text, never markup.
    assert!(dom.contains("Shop &amp; &lt;Sons&gt;"), "{dom}");
    assert!(!dom.contains("<Sons>"));
    // The cafe's row carries its warning; the others none.
    let row = |tenant: &str| {
        let at = dom
            .find(&format!("data-tenant=\"{}\"", f.name(tenant)))
            .unwrap();
        let start = dom[..at].rfind("<tr").unwrap();
        let end = at + dom[at..].find("</tr>").unwrap();
        dom[start..end].to_owned()
    };
    let cafe_row = row("{p}_cafe");
    assert!(cafe_row.contains("warn"), "{cafe_row}");
    assert!(cafe_row.contains("requests today at 90%"), "{cafe_row}");
    assert!(
        !row("{p}_mill").contains("class=\"warn"),
        "{}",
        row("{p}_mill")
    );
    // A sparkline per tenant, drawn.
    assert_eq!(dom.matches("class=\"spark\"").count(), 3, "{dom}");
    assert!(dom.contains("<polyline"), "{dom}");

    // A screenshot for people (README shows docs/console.png).
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &browser,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1440,900",
        ],
        &fleet_url,
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        png.len()
    );

    // The cafe's own page: its health, its chart, its audit entries.
    let page = browse(
        &browser,
        profile.path(),
        &["--dump-dom"],
        &format!("http://{}/tenants/{cafe}", g.admin),
    );
    assert!(page.contains("class=\"chart\""), "{page}");
    assert!(page.contains("api.write"), "{page}");
    assert!(page.contains("created"), "{page}");
    assert!(page.contains("requests today at 90%"), "{page}");
}

#[test]
fn the_admin_listener_asks_for_its_token_off_loopback_and_when_given_one() {
    let f = Fleet::new(Admin::Superuser);
    f.write(common::TWO_TENANTS);
    f.apply().ok();
    // Open to the network without a token: refused at start.
    let run = f.tenantry(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
    ]);
    assert_ne!(run.code, 0);
    assert!(run.all().contains("--admin-token"), "{}", run.all());
    // A short token is refused too.
    let run = f.tenantry(&["serve", "--listen", "127.0.0.1:0", "--admin-token", "short"]);
    assert_ne!(run.code, 0);
    assert!(run.all().contains("at least 16"), "{}", run.all());

    let secret = "console-token-0123456789";
    let g = Gateway::start(&f, &[], &[("TENANTRY_ADMIN_TOKEN", secret)]);
    for path in ["/", "/api/fleet", "/metrics", "/servers", "/console.js"] {
        let (s, _) = http(&g.admin, "GET", "localhost", path, None, None);
        assert_eq!(s, 401, "{path} without the token");
        let (s, _) = http(
            &g.admin,
            "GET",
            "localhost",
            path,
            Some("wrong-token-0123456789"),
            None,
        );
        assert_eq!(s, 401, "{path} with a wrong token");
        let (s, _) = http(&g.admin, "GET", "localhost", path, Some(secret), None);
        assert_eq!(s, 200, "{path} with the token");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http(&g.admin, "GET", "localhost", path, None, None).0, 200);
    }
    // A browser's first visit: the token in the address becomes a cookie.
    let (s, headers, _) = http_with_headers(
        &g.admin,
        "GET",
        "localhost",
        &format!("/?token={secret}"),
        None,
        None,
    );
    assert_eq!(s, 303, "{headers}");
    assert!(
        headers.contains(&format!(
            "set-cookie: tenantry_admin={secret}; HttpOnly; SameSite=Strict"
        )),
        "{headers}"
    );
    assert!(headers.lines().any(|l| l == "location: /"), "{headers}");
    // Never to another site: `//host/` is a protocol-relative address.
    let (s, headers, _) = http_with_headers(
        &g.admin,
        "GET",
        "localhost",
        &format!("//evil.example/?token={secret}"),
        None,
        None,
    );
    assert_eq!(s, 303, "{headers}");
    assert!(headers.lines().any(|l| l == "location: /"), "{headers}");
    let (s, _, _) = http_with_headers(&g.admin, "GET", "localhost", "/?token=nope", None, None);
    assert_eq!(s, 401);
    // The page is served with a policy that keeps scripts to its own.
    let (_, headers, body) =
        http_with_headers(&g.admin, "GET", "localhost", "/", Some(secret), None);
    assert!(
        headers.contains("content-security-policy: default-src 'self'"),
        "{headers}"
    );
    assert!(body.contains("<table"), "{body}");
}
