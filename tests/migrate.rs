//! Fleet migrations end to end: a new migration reaches every tenant
//! database in parallel, a broken tenant fails alone and resumes after the
//! fix, concurrent runs migrate each database once, tampered history is
//! reported, canaries and fail-fast stop the run, and a no-transaction
//! migration (CREATE INDEX CONCURRENTLY) works. Tiered privileges hold on
//! tables that migrations add.

mod common;

use common::{try_sql, Admin, Fleet};

/// V2: a table, an index and a column (no IF NOT EXISTS: running it twice fails).
const V2: &str = "CREATE TABLE reviews (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    widget_id bigint NOT NULL REFERENCES widgets (id),
    rating integer NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reviews_widget_id_idx ON reviews (widget_id);
ALTER TABLE widgets ADD COLUMN sku text;
";

/// `n` tenants `{p}_tNN`, the first with one user per tier.
fn fleet(n: usize, admin: Admin) -> Fleet {
    let f = Fleet::new(admin);
    f.own_schema();
    let mut t = String::new();
    for i in 0..n {
        t.push_str(&format!(
            "[tenants.{{p}}_t{i:02}]\nplan = \"starter\"\nsubdomain = \"{{p}}-t{i:02}\"\n"
        ));
        if i == 0 {
            t.push_str("admins = [{ username = \"{p}_t00_a\" }]\ndevelopers = [{ username = \"{p}_t00_d\" }]\ncustomers = [{ username = \"{p}_t00_c\" }]\n");
        }
        t.push('\n');
    }
    f.write(&t);
    f.tenantry(&["apply", "--auto-approve", "--jobs", "4"]).ok();
    f
}

fn history_rows(f: &Fleet, db: &str) -> Vec<String> {
    f.psql(
        db,
        "SELECT version FROM refinery_schema_history ORDER BY version",
    )
    .lines()
    .map(|l| l.trim().to_owned())
    .filter(|l| !l.is_empty())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_migration_reaches_every_tenant_and_the_tiers_hold() {
    let f = fleet(20, Admin::CreateRole);
    f.add_migration("V2__reviews.sql", V2);
    let plan = f.tenantry(&["plan"]);
    assert!(
        plan.ok().contains(&f.name("~ migrate {p}_t07: V1 -> V2")),
        "{}",
        plan.stdout
    );

    let out = f.tenantry(&["migrate", "--jobs", "4"]);
    let text = out.ok();
    assert!(
        text.contains("20 migrated, 0 up to date, 0 failed"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_t13 ")))
        .unwrap();
    assert!(
        row.contains("V1") && row.contains("V2") && row.contains("migrated"),
        "{row}"
    );
    for i in 0..20 {
        assert_eq!(history_rows(&f, &format!("{{p}}_t{i:02}")), ["1", "2"]);
    }
    // Owned by the tenant's owner, so default privileges gave the tiers.
    let owner = f.psql(
        "{p}_t00",
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'reviews'",
    );
    assert_eq!(owner.trim(), f.name("{p}_t00_owner"));
    let a = f.connect_as("{p}_t00_a", "{p}_t00").await.unwrap();
    assert_eq!(
        try_sql(
            &a,
            "INSERT INTO widgets (name, price, sku) VALUES ('w', 1, 'W-1')"
        )
        .await,
        "ok"
    );
    assert_eq!(
        try_sql(
            &a,
            "INSERT INTO reviews (widget_id, rating) SELECT id, 5 FROM widgets"
        )
        .await,
        "ok"
    );
    let d = f.connect_as("{p}_t00_d", "{p}_t00").await.unwrap();
    assert_eq!(try_sql(&d, "UPDATE reviews SET rating = 4").await, "ok");
    assert_eq!(
        try_sql(&d, "DELETE FROM reviews").await,
        "permission denied for table reviews"
    );
    let c = f.connect_as("{p}_t00_c", "{p}_t00").await.unwrap();
    assert_eq!(try_sql(&c, "SELECT * FROM reviews").await, "ok");
    assert_eq!(
        try_sql(
            &c,
            "INSERT INTO reviews (widget_id, rating) SELECT id, 1 FROM widgets"
        )
        .await,
        "permission denied for table reviews"
    );
    // Nothing left: status is clean, a re-run is a no-op, plan agrees.
    let status = f.tenantry(&["status"]);
    assert!(
        status
            .ok()
            .lines()
            .filter(|l| l.starts_with(&f.p))
            .all(|l| l.contains("V2")),
        "{}",
        status.stdout
    );
    let again = f.tenantry(&["migrate", "--json"]);
    let report: serde_json::Value = serde_json::from_str(again.ok()).expect("JSON report");
    assert_eq!(report.as_array().unwrap().len(), 20);
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "up_to_date"),
        "{report}"
    );
    f.assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tenant_fails_alone_and_a_rerun_after_the_fix_converges() {
    let f = fleet(20, Admin::Superuser);
    f.add_migration("V2__reviews.sql", V2);
    // A conflicting object made by hand in one tenant.
    f.psql("{p}_t07", "CREATE TABLE reviews (id int)");
    let out = f.tenantry(&["migrate", "--jobs", "3"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_t07 ")))
        .unwrap();
    assert!(
        row.contains("FAILED") && row.contains("relation \"reviews\" already exists"),
        "{row}"
    );
    assert!(
        out.stdout.contains("19 migrated, 0 up to date, 1 failed"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("last good version"), "{}", out.stderr);
    assert_eq!(
        history_rows(&f, "{p}_t07"),
        ["1"],
        "the failed tenant stays at V1"
    );
    assert_eq!(
        f.psql(
            "{p}_t07",
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'sku'"
        )
        .trim(),
        "0"
    );

    f.psql("{p}_t07", "DROP TABLE reviews");
    let out = f.tenantry(&["migrate"]);
    assert!(
        out.ok().contains("1 migrated, 19 up to date, 0 failed"),
        "{}",
        out.stdout
    );
    assert_eq!(history_rows(&f, "{p}_t07"), ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_migrate_each_tenant_exactly_once() {
    let f = fleet(20, Admin::Superuser);
    // Slow enough that the two runs overlap on the same databases.
    f.add_migration("V2__reviews.sql", &format!("SELECT pg_sleep(0.1);\n{V2}"));
    let spawn = || {
        f.command(&["migrate", "--jobs", "4", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let report = |o: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (ra, rb) = (report(&a), report(&b));
    let migrated = |r: &serde_json::Value| {
        r.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["result"] == "migrated")
            .count()
    };
    assert_eq!(
        migrated(&ra) + migrated(&rb),
        20,
        "each tenant migrated by exactly one run\n{ra}\n{rb}"
    );
    for i in 0..20 {
        assert_eq!(history_rows(&f, &format!("{{p}}_t{i:02}")), ["1", "2"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_history_row_is_reported_as_divergent() {
    let f = fleet(3, Admin::Superuser);
    f.psql(
        "{p}_t01",
        "UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1",
    );
    let status = f.tenantry(&["status"]);
    assert_eq!(status.code, 1, "{}", status.all());
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with(&f.name("{p}_t01 ")))
        .unwrap();
    assert!(
        row.contains("V1 applied with a different checksum"),
        "{row}"
    );
    assert!(
        status.stderr.contains(&f.name("{p}_t01")),
        "{}",
        status.stderr
    );
    // An applied version the directory does not know is reported too.
    f.psql(
        "{p}_t02",
        "INSERT INTO refinery_schema_history VALUES (9, 'later', 'x', '1')",
    );
    let json = f.tenantry(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[2]["missing"], serde_json::json!([9]), "{rows}");
    // Migrate refuses to run on top of either.
    f.add_migration("V2__reviews.sql", V2);
    let out = f.tenantry(&["migrate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("1 migrated, 0 up to date, 2 failed"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_run_and_fail_fast_stops_scheduling() {
    let f = fleet(6, Admin::Superuser);
    f.add_migration("V2__reviews.sql", V2);
    f.psql("{p}_t03", "CREATE TABLE reviews (id int)");
    let out = f.tenantry(&[
        "migrate",
        "--canary",
        &f.name("{p}_t03"),
        "--canary",
        &f.name("{p}_t01"),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("1 migrated, 0 up to date, 1 failed, 4 skipped"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("a canary failed"), "{}", out.stdout);
    assert_eq!(
        history_rows(&f, "{p}_t05"),
        ["1"],
        "nothing ran after the canary failed"
    );

    // Fail-fast with one worker: tenants after t03 are not started.
    let out = f.tenantry(&["migrate", "--fail-fast", "--jobs", "1"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("2 skipped"), "{}", out.stdout);
    assert_eq!(history_rows(&f, "{p}_t05"), ["1"]);
    // Without it, everyone but the broken tenant gets there.
    let out = f.tenantry(&["migrate"]);
    assert!(out.stdout.contains("1 failed"), "{}", out.stdout);
    assert_eq!(history_rows(&f, "{p}_t05"), ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_transaction_migration_runs_create_index_concurrently() {
    let f = fleet(2, Admin::CreateRole);
    f.add_migration(
        "V2__widgets_name_idx.sql",
        "-- tenantry:no-transaction\nCREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name);\nCREATE INDEX CONCURRENTLY widgets_price_idx ON widgets (price);\n",
    );
    f.add_migration("V3__reviews.sql", V2);
    let out = f.tenantry(&["migrate"]);
    assert!(out.ok().contains("2 migrated"), "{}", out.stdout);
    for db in ["{p}_t00", "{p}_t01"] {
        assert_eq!(history_rows(&f, db), ["1", "2", "3"]);
        let valid = f.psql(db, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'widgets_%_idx' AND i.indisvalid");
        assert_eq!(valid.trim(), "3", "created_at, name and price indexes");
    }
    let status = f.tenantry(&["status"]);
    status.ok();
    f.assert_converged();
}
