//! Files tenantry keeps under `[paths].secrets`, and forgetting them when
//! what they were for is gone: `<secrets>/<username>` holds a user's
//! generated password, `<secrets>/<tenant>.token` the developer token `up`
//! prints. When apply drops a user (removed from the file, or with its
//! tenant) its password file goes too, and a destroyed tenant's token file.
//! Files a user of the inventory still reads are never removed.

use std::path::{Path, PathBuf};

use tenantry_manifest::{Ident, Inventory, PasswordSource};
use tenantry_plan::plan::{Action, Change, TenantPlan};

/// The file of `up`'s developer token for `tenant`.
pub fn token_file(inventory: &Inventory, tenant: &str) -> PathBuf {
    inventory.paths.secrets.join(format!("{tenant}.token"))
}

/// The secrets files that `tp`, once applied, leaves without a purpose.
pub fn orphaned(inventory: &Inventory, tp: &TenantPlan) -> Vec<PathBuf> {
    let dir = &inventory.paths.secrets;
    // Names come from the server's catalog: only plain identifiers make paths.
    let safe = |name: &str| Ident::parse(name).is_ok();
    let mut files: Vec<PathBuf> = tp
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::DropUser { user } if safe(user) => Some(dir.join(user)),
            _ => None,
        })
        .collect();
    if tp.action == Action::Destroy && safe(&tp.tenant) {
        files.push(token_file(inventory, &tp.tenant));
        files.push(dir.join(tenantry_layout::roles::gateway_login_name(&tp.tenant)));
    }
    let in_use: Vec<&Path> = inventory
        .tenants
        .iter()
        .flat_map(|t| &t.users)
        .map(|u| match &u.password {
            PasswordSource::File { path } | PasswordSource::Generated { path } => path.as_path(),
            PasswordSource::Env { .. } => Path::new(""),
        })
        .collect();
    files.retain(|f| !in_use.contains(&f.as_path()));
    files
}

/// Removes `files` (those that exist); returns the ones removed, or why one
/// could not be.
pub fn remove(files: &[PathBuf]) -> Vec<Result<PathBuf, String>> {
    files
        .iter()
        .filter_map(|f| match std::fs::remove_file(f) {
            Ok(()) => Some(Ok(f.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("cannot remove {}: {e}", f.display()))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inventory in a directory of its own, whose developer reads a
    /// password file that lies in the secrets directory.
    fn inventory() -> (tempfile::TempDir, Inventory) {
        let dir = tempfile::tempdir().unwrap();
        let private =
            |mode| <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode);
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::set_permissions(dir.path().join("s"), private(0o700)).unwrap();
        std::fs::write(dir.path().join("s/old_d"), "pw\n").unwrap();
        // Password files must be private (the manifest refuses others).
        std::fs::set_permissions(dir.path().join("s/old_d"), private(0o600)).unwrap();
        let src = r#"
[paths]
secrets = "s"
[plans.p]
connection_limit = 1
statement_timeout = "1s"
pool_size = 1
requests_per_second = 1
[tenants.kept]
plan = "p"
admins = [{ username = "kept_a" }]
developers = [{ username = "kept_d", password_file = "s/old_d" }]
"#;
        let inv =
            Inventory::from_str_with(src, &dir.path().join("tenants.toml"), &|_| None).unwrap();
        (dir, inv)
    }

    fn drop_user(user: &str) -> Change {
        Change::DropUser {
            user: user.to_owned(),
        }
    }

    #[test]
    fn a_destroyed_tenant_leaves_its_users_passwords_and_token() {
        let (dir, inv) = inventory();
        let s = dir.path().join("s");
        let tp = TenantPlan {
            tenant: "gone".into(),
            action: Action::Destroy,
            changes: vec![
                drop_user("gone_a"),
                drop_user("gone_c"),
                Change::DropDatabase {
                    database: "gone".into(),
                    protected: false,
                },
            ],
        };
        assert_eq!(
            orphaned(&inv, &tp),
            [
                s.join("gone_a"),
                s.join("gone_c"),
                s.join("gone.token"),
                s.join("gone_gateway")
            ]
        );
    }

    #[test]
    fn a_dropped_user_of_a_kept_tenant_leaves_only_its_password() {
        let (dir, inv) = inventory();
        let tp = TenantPlan {
            tenant: "kept".into(),
            action: Action::Update,
            changes: vec![drop_user("kept_c")],
        };
        assert_eq!(orphaned(&inv, &tp), [dir.path().join("s/kept_c")]);
    }

    #[test]
    fn files_still_read_and_odd_names_are_kept() {
        let (_dir, inv) = inventory();
        let tp = TenantPlan {
            tenant: "../etc".into(),
            action: Action::Destroy,
            changes: vec![drop_user("old_d"), drop_user("kept_a"), drop_user("../x")],
        };
        assert!(orphaned(&inv, &tp).is_empty(), "{:?}", orphaned(&inv, &tp));
    }

    #[test]
    fn remove_skips_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("a");
        std::fs::write(&here, "pw\n").unwrap();
        let missing = dir.path().join("b");
        let removed = remove(&[here.clone(), missing]);
        assert_eq!(removed, [Ok(here.clone())]);
        assert!(!here.exists());
    }
}
