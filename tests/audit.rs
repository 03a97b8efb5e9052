//! The audit trail end to end: what apply, suspension, rotation, tokens,
//! backup and restore write to a tenant's `tenantry.audit`, the gateway's
//! API writes (token, role, method, path, status, row), who may read and
//! who may change the rows (nobody of the tenant's), `GET /api/audit`,
//! `tenantry audit`, and drift on the table's privileges.

mod common;

use std::time::Duration;

use common::gateway::{http, Gateway};
use common::{Admin, Fleet};
use serde_json::Value;

/// `tenantry audit <tenant> --json`, parsed (newest first).
fn trail(f: &Fleet, tenant: &str) -> Vec<Value> {
    let out = f.tenantry(&["audit", &f.name(tenant), "--json"]);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// The id printed by `tenantry token list --json` for the newest token.
fn newest_token_id(f: &Fleet, tenant: &str) -> i64 {
    let out = f.tenantry(&["token", "list", &f.name(tenant), "--json"]);
    let list: Vec<Value> = serde_json::from_str(out.ok()).unwrap();
    list.last().unwrap()["id"].as_i64().unwrap()
}

#[test]
fn commands_and_api_writes_leave_entries_nobody_of_the_tenant_can_change() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(common::TWO_TENANTS);
    f.apply().ok();

    // Created, by the admin role, from this machine, with the plan's lines.
    let entries = trail(&f, "{p}_shop");
    assert_eq!(actions(&entries), ["created"], "{entries:?}");
    let created = &entries[0];
    assert_eq!(created["actor"], f.name("{p}_tenantry"));
    assert!(!created["os_user"].as_str().unwrap().is_empty());
    assert!(!created["host"].as_str().unwrap().is_empty());
    let changes = created["detail"]["changes"].to_string();
    assert!(changes.contains(&f.name("database {p}_shop")), "{changes}");

    // Tokens: created (id, role, label), revoked (id).
    let admin_token = common::gateway::token(&f, "{p}_shop", "admin");
    let admin_id = newest_token_id(&f, "{p}_shop");
    let dev_token = common::gateway::token(&f, "{p}_shop", "developer");
    let dev_id = newest_token_id(&f, "{p}_shop");
    let cust_token = common::gateway::token(&f, "{p}_shop", "customer");
    let spare = common::gateway::token(&f, "{p}_shop", "customer");
    assert!(!spare.is_empty());
    let spare_id = newest_token_id(&f, "{p}_shop");
    f.tenantry(&[
        "token",
        "revoke",
        &f.name("{p}_shop"),
        &spare_id.to_string(),
    ])
    .ok();
    let entries = trail(&f, "{p}_shop");
    assert_eq!(
        &actions(&entries)[..5],
        [
            "token_revoked",
            "token_created",
            "token_created",
            "token_created",
            "token_created"
        ]
    );
    assert_eq!(entries[0]["detail"]["token"], spare_id);
    assert_eq!(entries[3]["detail"]["role"], "developer");
    assert_eq!(entries[3]["detail"]["token"], dev_id);

    // A password rotation names the users, never a password.
    f.tenantry(&["rotate", &f.name("{p}_shop")]).ok();
    let entries = trail(&f, "{p}_shop");
    assert_eq!(entries[0]["action"], "password_rotated");
    let users = entries[0]["detail"]["users"].to_string();
    assert!(users.contains(&f.name("{p}_shop_a")), "{users}");
    for user in ["{p}_shop_a", "{p}_shop_d", "{p}_shop_c"] {
        let pw = f.secret(user);
        let all = serde_json::to_string(&entries).unwrap();
        assert!(!all.contains(&pw), "a password is in the trail");
    }

    // Suspended, then resumed: each its own entry.
    f.write(&common::TWO_TENANTS.replace(
        "plan = \"starter\"",
        "plan = \"starter\"\nstatus = \"suspended\"",
    ));
    f.apply().ok();
    assert_eq!(trail(&f, "{p}_cafe")[0]["action"], "suspended");
    f.write(common::TWO_TENANTS);
    f.apply().ok();
    assert_eq!(
        actions(&trail(&f, "{p}_cafe"))[..3],
        ["resumed", "suspended", "created"]
    );

    // API writes, through the gateway: the token's id and role, the
    // request, its status, the row; a refused write too.
    let g = Gateway::start(&f, &["--usage-flush-interval", "200ms"], &[]);
    let shop = f.name("{p}-shop.localhost");
    let (s, b) = http(
        &g.api,
        "POST",
        &shop,
        "/api/widgets",
        Some(&dev_token),
        Some(r#"{"name":"hammer","price":1299}"#),
    );
    assert_eq!(s, 201, "{b}");
    let row: Value = serde_json::from_str(&b).unwrap();
    let widget = row["id"].as_i64().unwrap();
    let (s, _) = http(
        &g.api,
        "POST",
        &shop,
        "/api/widgets",
        Some(&cust_token),
        Some(r#"{"name":"nail","price":1}"#),
    );
    assert_eq!(s, 403, "a customer may not write");
    let (s, _) = http(
        &g.api,
        "DELETE",
        &shop,
        &format!("/api/widgets/{widget}"),
        Some(&admin_token),
        None,
    );
    assert_eq!(s, 204);
    // Reads are not in the trail.
    assert_eq!(g.get(&shop, &dev_token).0, 200);
    let api_writes = || {
        trail(&f, "{p}_shop")
            .into_iter()
            .filter(|e| e["action"] == "api.write")
            .collect::<Vec<_>>()
    };
    assert!(
        common::wait_until(Duration::from_secs(30), || api_writes().len() >= 3),
        "the gateway's writes never reached the trail: {:?}\n{}",
        trail(&f, "{p}_shop"),
        g.log()
    );
    let writes = api_writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    let (delete, refused, post) = (
        &writes[0]["detail"],
        &writes[1]["detail"],
        &writes[2]["detail"],
    );
    assert_eq!(post["token"], dev_id);
    assert_eq!(post["role"], "developer");
    assert_eq!(post["method"], "POST");
    assert_eq!(post["path"], "/api/widgets");
    assert_eq!(post["status"], 201);
    assert_eq!(post["row"], widget);
    assert_eq!(writes[2]["actor"], format!("token {dev_id} (developer)"));
    assert_eq!(refused["role"], "customer");
    assert_eq!(refused["status"], 403);
    assert_eq!(delete["token"], admin_id);
    assert_eq!(delete["method"], "DELETE");
    assert_eq!(delete["row"], widget);
    assert_eq!(delete["status"], 204);
    let all = serde_json::to_string(&writes).unwrap();
    assert!(!all.contains(&dev_token) && !all.contains("hash"), "{all}");

    // GET /api/audit: the tenant's admin reads it; the others may not.
    let (s, b) = http(
        &g.api,
        "GET",
        &shop,
        "/api/audit?limit=2",
        Some(&admin_token),
        None,
    );
    assert_eq!(s, 200, "{b}");
    let page: Vec<Value> = serde_json::from_str(&b).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["action"], "api.write");
    for token in [&dev_token, &cust_token] {
        let (s, b) = http(&g.api, "GET", &shop, "/api/audit", Some(token), None);
        assert_eq!(s, 403, "{b}");
    }
    let (s, b) = http(
        &g.api,
        "GET",
        &shop,
        "/api/audit?since=2999-01-01T00:00:00Z",
        Some(&admin_token),
        None,
    );
    assert_eq!((s, b.as_str()), (200, "[]"));
    let (s, b) = http(
        &g.api,
        "GET",
        &shop,
        "/api/audit?since=yesterday",
        Some(&admin_token),
        None,
    );
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("since"), "{b}");

    // No role of the tenant's may change a row; only its admin group reads.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (user, reads) in [
            ("{p}_shop_a", true),
            ("{p}_shop_d", false),
            ("{p}_shop_c", false),
        ] {
            let c = f.connect_as(user, "{p}_shop").await.unwrap();
            for sql in [
                "UPDATE tenantry.audit SET action = 'nothing'",
                "DELETE FROM tenantry.audit",
                "INSERT INTO tenantry.audit (action, actor) VALUES ('forged', 'me')",
                "TRUNCATE tenantry.audit",
                "ALTER TABLE tenantry.audit DISABLE TRIGGER ALL",
                "DROP TABLE tenantry.audit",
            ] {
                let e = c.batch_execute(sql).await.expect_err(sql);
                assert!(
                    e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                    "{user}: {sql}: {e:?}"
                );
            }
            let read = c.batch_execute("SELECT * FROM tenantry.audit").await;
            assert_eq!(read.is_ok(), reads, "{user} reading: {read:?}");
            // Nor by becoming one of its groups.
            for group in ["{p}_shop_admin", "{p}_shop_owner", "{p}_shop_gateway"] {
                let set = c
                    .batch_execute(&format!("SET ROLE {}", f.name(group)))
                    .await;
                if set.is_ok() {
                    let e = c.batch_execute("DELETE FROM tenantry.audit").await;
                    assert!(e.is_err(), "{user} as {group} deleted audit rows");
                    c.batch_execute("RESET ROLE").await.unwrap();
                }
            }
        }
    });

    if common::pg_dump_major() < f.cluster.major() {
        // No pg_dump of this server's major on this machine: backups are
        // refused before they start (tests/lifecycle.rs), so there is no
        // dump to restore; the installed major's run covers the rest.
        eprintln!("no pg_dump for this server's major: backup and restore not tried");
        return;
    }
    // Backup, then restore over it: every entry is still there, and both
    // are entries too.
    let before = trail(&f, "{p}_shop").len();
    let dump = f.dir.path().join("shop.dump");
    f.tenantry(&["backup", &f.name("{p}_shop"), "-o", dump.to_str().unwrap()])
        .ok();
    f.tenantry(&[
        "restore",
        &f.name("{p}_shop"),
        dump.to_str().unwrap(),
        "--force",
    ])
    .ok();
    let after = trail(&f, "{p}_shop");
    assert_eq!(after.len(), before + 2, "{after:?}");
    assert_eq!(actions(&after)[..2], ["restore", "backup"]);
    assert_eq!(after[1]["detail"]["file"], dump.to_str().unwrap());

    // The table's privileges are part of the plan: a grant by hand is drift.
    f.psql(
        "{p}_shop",
        "GRANT UPDATE, DELETE ON tenantry.audit TO {p}_shop_developer",
    );
    let plan = f.tenantry(&["plan"]);
    assert!(
        plan.stdout.contains("audit trail: table tenantry.audit"),
        "{}",
        plan.all()
    );
    f.apply().ok();
    let plan = f.tenantry(&["plan"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.all());
    rt.block_on(async {
        let c = f.connect_as("{p}_shop_d", "{p}_shop").await.unwrap();
        assert!(c.batch_execute("DELETE FROM tenantry.audit").await.is_err());
    });

    // `tenantry audit` as a table, and --since.
    let out = f.tenantry(&["audit", &f.name("{p}_shop"), "--since", "1h"]);
    let text = out.ok();
    assert!(
        text.contains("api.write") && text.contains("restore"),
        "{text}"
    );
    assert!(text.contains(&f.name("{p}_tenantry")), "{text}");
}

#[test]
fn a_fleet_migration_is_in_each_tenants_trail() {
    let f = Fleet::new(Admin::Superuser);
    f.own_schema();
    f.write(common::TWO_TENANTS);
    f.apply().ok();
    f.add_migration("V2__note.sql", "ALTER TABLE widgets ADD COLUMN note text;");
    f.tenantry(&["migrate"]).ok();
    for tenant in ["{p}_shop", "{p}_cafe"] {
        let entries = trail(&f, tenant);
        assert_eq!(actions(&entries), ["migrated", "created"], "{entries:?}");
        assert_eq!(entries[0]["detail"]["from"], 1);
        assert_eq!(entries[0]["detail"]["to"], 2);
    }
    // Nothing to do: nothing recorded.
    f.tenantry(&["migrate"]).ok();
    assert_eq!(trail(&f, "{p}_shop").len(), 2);
}

#[test]
fn a_destroyed_tenants_trail_comes_back_with_its_backup() {
    let f = Fleet::new(Admin::Superuser);
    if common::pg_dump_major() < f.cluster.major() {
        eprintln!("no pg_dump for this server's major: nothing to destroy with a backup");
        return;
    }
    f.write(common::TWO_TENANTS);
    f.apply().ok();
    let _ = common::gateway::token(&f, "{p}_cafe", "admin");
    // Removed from the file and destroyed: the backup holds the trail,
    // `destroy_started` included.
    let shop_only = common::TWO_TENANTS
        .split("[tenants.{p}_cafe]")
        .next()
        .unwrap()
        .to_owned();
    f.write(&shop_only);
    f.tenantry(&["apply", "--auto-approve", "--allow-destroy"])
        .ok();
    let backups = f.dir.path().join(".tenantry/backups");
    let dump = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&f.name("{p}_cafe")))
        .expect("the destroy's backup");
    // Made anew, then restored: the old trail is back, in its order, after
    // which come the new tenant's entries and the restore.
    f.write(common::TWO_TENANTS);
    f.apply().ok();
    let out = f.tenantry(&["restore", &f.name("{p}_cafe"), dump.to_str().unwrap()]);
    assert!(out.ok().contains("added back: 3"), "{}", out.stdout);
    let entries = trail(&f, "{p}_cafe");
    assert_eq!(
        actions(&entries),
        [
            "restore",
            "created",
            "destroy_started",
            "token_created",
            "created"
        ],
        "{entries:?}"
    );
    // Restoring it again adds nothing twice.
    let out = f.tenantry(&[
        "restore",
        &f.name("{p}_cafe"),
        dump.to_str().unwrap(),
        "--force",
    ]);
    assert!(!out.ok().contains("added back"), "{}", out.stdout);
    assert_eq!(trail(&f, "{p}_cafe").len(), 6);
}
