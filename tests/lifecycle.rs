//! A tenant's life after creation: suspend and resume, removing a user,
//! destroying a tenant (refused without the flag, refused while protected,
//! backed up before the drop, its generated secrets removed after it), and
//! two applies at once.

mod common;

use common::{try_sql, Admin, Fleet, TWO_TENANTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_keep_the_data() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let a = f.connect_as("{p}_shop_a", "{p}_shop").await.unwrap();
    assert_eq!(
        try_sql(&a, "INSERT INTO widgets (name, price) VALUES ('kept', 5)").await,
        "ok"
    );

    f.write(&TWO_TENANTS.replacen(
        "plan = \"professional\"",
        "plan = \"professional\"\nstatus = \"suspended\"",
        1,
    ));
    let plan = f.tenantry(&["plan"]);
    assert!(
        plan.ok().contains("login: true -> false"),
        "{}",
        plan.stdout
    );
    f.apply().ok();
    let err = f
        .connect_as("{p}_shop_a", "{p}_shop")
        .await
        .expect_err("suspended users cannot log in");
    assert!(err.contains("not permitted to log in"), "{err}");
    // The open session was ended too.
    assert!(
        a.query_one("SELECT 1", &[]).await.is_err(),
        "existing sessions are terminated"
    );
    // The other tenant is unaffected.
    f.connect_as("{p}_cafe_a", "{p}_cafe")
        .await
        .expect("other tenant still works");

    f.write(TWO_TENANTS);
    f.apply().ok();
    let a = f
        .connect_as("{p}_shop_a", "{p}_shop")
        .await
        .expect("resumed");
    let n: i64 = a
        .query_one("SELECT count(*) FROM widgets WHERE name = 'kept'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_removed_from_the_file_is_dropped_and_its_objects_kept() {
    let f = Fleet::new(Admin::CreateRole);
    f.write(&TWO_TENANTS.replace(
        "customers  = [{ username = \"{p}_shop_c\" }]",
        "customers  = [{ username = \"{p}_shop_c\" }, { username = \"{p}_shop_c2\" }]",
    ));
    f.apply().ok();
    f.connect_as("{p}_shop_c2", "{p}_shop").await.unwrap();
    let secret = f
        .dir
        .path()
        .join(".tenantry/secrets")
        .join(f.name("{p}_shop_c2"));
    assert!(secret.exists(), "{} was generated", secret.display());
    f.write(TWO_TENANTS);
    let plan = f.tenantry(&["plan"]);
    assert!(
        plan.ok().contains(&f.name("- user {p}_shop_c2")),
        "{}",
        plan.stdout
    );
    f.apply().ok();
    let su = f.superuser("postgres").await;
    let n: i64 = common::count(
        &su,
        "SELECT count(*) FROM pg_roles WHERE rolname = $1",
        &f.name("{p}_shop_c2"),
    )
    .await;
    assert_eq!(n, 0);
    assert!(
        !secret.exists(),
        "the dropped user's generated password is removed"
    );
    assert!(
        f.dir
            .path()
            .join(".tenantry/secrets")
            .join(f.name("{p}_shop_c"))
            .exists(),
        "the other users' are kept"
    );
    f.assert_converged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_needs_the_flag_respects_protection_and_backs_up_first_as_superuser() {
    destroy(Admin::Superuser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_needs_the_flag_respects_protection_and_backs_up_first_as_createrole_admin() {
    destroy(Admin::CreateRole).await;
}

async fn destroy(admin: Admin) {
    let f = Fleet::new(admin);
    f.write(TWO_TENANTS);
    f.apply().ok();
    let a = f.connect_as("{p}_cafe_a", "{p}_cafe").await.unwrap();
    assert_eq!(
        try_sql(
            &a,
            "INSERT INTO widgets (name, price) VALUES ('latte', 450), ('mocha', 500)"
        )
        .await,
        "ok"
    );
    drop(a);

    // Both tenants removed from the file: shop is protected, cafe is not.
    f.write("");
    let plan = f.tenantry(&["plan"]);
    let text = plan.ok();
    assert!(
        text.contains(&f.name("- tenant {p}_cafe will be destroyed")),
        "{text}"
    );
    assert!(text.contains("deletion_protection"), "{text}");

    let out = f.tenantry(&["apply", "--auto-approve", "--allow-destroy"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&f.name("refusing to destroy {p}_shop")),
        "{}",
        out.stderr
    );

    // Only the unprotected tenant is removed from the file.
    f.write(TWO_TENANTS.split("[tenants.{p}_cafe]").next().unwrap());
    let out = f.apply();
    assert_eq!(out.code, 1, "destroy without --allow-destroy is refused");
    assert!(out.stderr.contains("--allow-destroy"), "{}", out.stderr);
    let su = f.superuser("postgres").await;
    let exists = |db: String| {
        let su = &su;
        async move {
            common::count(
                su,
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &db,
            )
            .await
                == 1
        }
    };
    assert!(exists(f.name("{p}_cafe")).await, "still there");

    // `up` keeps a developer token beside the generated passwords.
    let secrets = f.dir.path().join(".tenantry/secrets");
    let token = secrets.join(f.name("{p}_cafe.token"));
    std::fs::write(&token, "a-token\n").unwrap();
    let cafe_secrets = [
        secrets.join(f.name("{p}_cafe_a")),
        secrets.join(f.name("{p}_cafe_c")),
    ];
    assert!(
        cafe_secrets.iter().all(|p| p.exists()),
        "generated by apply"
    );

    let out = f.tenantry(&["apply", "--auto-approve", "--allow-destroy"]);
    if common::pg_dump_major() < f.cluster.major() {
        // No pg_dump of this server's major on this machine: no backup can
        // be made, so apply says why before it starts and drops nothing.
        assert_eq!(out.code, 1, "{}", out.all());
        assert!(
            out.stderr.contains(&format!(
                "and the server runs PostgreSQL {}, which it cannot dump or restore into safely",
                f.cluster.major()
            )),
            "{}",
            out.all()
        );
        assert!(exists(f.name("{p}_cafe")).await, "kept without a backup");
        assert!(cafe_secrets.iter().all(|p| p.exists()), "secrets kept");
        return;
    }
    let text = out.ok();
    assert!(!exists(f.name("{p}_cafe")).await, "dropped");
    for gone in cafe_secrets.iter().chain([&token]) {
        assert!(!gone.exists(), "{} is left behind", gone.display());
        assert!(
            text.contains(&format!("removed {}", gone.display())),
            "apply says it removed {}: {text}",
            gone.display()
        );
    }
    assert!(
        secrets.join(f.name("{p}_shop_a")).exists(),
        "the kept tenant's secrets stay"
    );
    assert!(exists(f.name("{p}_shop")).await, "protected tenant kept");
    let roles: i64 = common::count(
        &su,
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
        &f.name("{p}\\_cafe%"),
    )
    .await;
    assert_eq!(roles, 0, "the tenant's roles are gone");

    // The backup restores, with the data.
    let backups: Vec<_> = std::fs::read_dir(f.dir.path().join(".tenantry/backups"))
        .expect("backups dir")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        text.contains(&backups[0].display().to_string()),
        "apply names the backup: {text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backups[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let restored = f.name("{p}_restored");
    f.psql("postgres", &format!("CREATE DATABASE {restored}"));
    let status = std::process::Command::new(f.cluster.tool("pg_restore"))
        .args([
            "--no-owner",
            "--no-privileges",
            "--host=127.0.0.1",
            "--username=postgres",
        ])
        .arg(format!("--port={}", f.cluster.port()))
        .arg(format!("--dbname={restored}"))
        .arg(&backups[0])
        .status()
        .unwrap();
    assert!(status.success());
    let r = f.superuser(&restored).await;
    let names: Vec<String> = r
        .query("SELECT name FROM widgets ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, ["latte", "mocha"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_waits_for_the_lock_or_fails_fast() {
    let f = Fleet::new(Admin::Superuser);
    f.write(TWO_TENANTS);
    // Hold the fleet's lock as another apply would.
    let holder = f.superuser("postgres").await;
    tenantry_pg::lock::acquire(&holder, &f.p, std::time::Duration::ZERO)
        .await
        .unwrap();
    let out = f.tenantry(&["apply", "--auto-approve", "--lock-timeout", "0s"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("another tenantry apply holds the lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("server pid"),
        "names the holder: {}",
        out.stderr
    );
    // Released: the next apply goes through.
    drop(holder);
    f.tenantry(&["apply", "--auto-approve", "--lock-timeout", "10s"])
        .ok();
}
