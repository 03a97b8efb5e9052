//! The plan: what apply will do, tenant by tenant, as plain serialisable data.

use serde::Serialize;
use tenantry_manifest::Group;

use tenantry_layout::Kind;

#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub fleet: String,
    /// Tenants with something to do, sorted by name.
    pub tenants: Vec<TenantPlan>,
    /// Objects that carry a tenant's name but are not ours: apply refuses to run.
    pub conflicts: Vec<Conflict>,
    /// Things worth knowing that apply will not change.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Destroy,
    /// The copy a move left on its old server (closed): dropped like a
    /// destroyed tenant, after a backup, but only with `--allow-destroy`,
    /// and never a reason to refuse the rest of a plan.
    Leftover,
}

#[derive(Debug, Serialize)]
pub struct TenantPlan {
    pub tenant: String,
    pub action: Action,
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
pub struct Conflict {
    pub tenant: String,
    /// `database`, `role` or `schema`.
    pub object: &'static str,
    pub name: String,
    pub reason: String,
    /// How to resolve it, when not the usual for an object that is not
    /// ours (rename the tenant, or drop or rename the object; adopt it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// One attribute going from `old` to `new` (display text; never a password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub what: String,
    pub old: String,
    pub new: String,
}

impl Diff {
    pub fn new(what: impl Into<String>, old: impl ToString, new: impl ToString) -> Diff {
        Diff {
            what: what.into(),
            old: old.to_string(),
            new: new.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    CreateRole {
        role: String,
        kind: Kind,
    },
    UpdateRole {
        role: String,
        kind: Kind,
        diffs: Vec<Diff>,
        /// Memberships to take away.
        revoke: Vec<String>,
    },
    CreateDatabase {
        database: String,
        owner: String,
    },
    UpdateDatabase {
        database: String,
        diffs: Vec<Diff>,
        /// Roles other than the tenant's holding privileges on the database.
        foreign_grantees: Vec<String>,
    },
    Migrate {
        database: String,
        from: Option<i64>,
        to: i64,
    },
    /// Grants inside the tenant database (schema, tables, sequences, default
    /// privileges); `diffs` is empty on creation.
    Privileges {
        database: String,
        diffs: Vec<Diff>,
        foreign_grantees: Vec<String>,
    },
    /// Creates or repairs the gateway's token store (schema `tenantry`)
    /// inside the tenant database; `diffs` is empty on creation.
    TokenStore {
        database: String,
        diffs: Vec<Diff>,
        foreign_grantees: Vec<String>,
        /// Some object of the store belongs to another role: hand it to the
        /// owner role first (as the admin).
        reown: bool,
    },
    CreateUser {
        user: String,
        group: Group,
        login: bool,
        connection_limit: i32,
        statement_timeout: String,
        password_source: String,
    },
    UpdateUser {
        user: String,
        group: Group,
        diffs: Vec<Diff>,
        /// Send a new verifier (the password changed or is unknown to the server).
        set_password: bool,
        revoke: Vec<String>,
    },
    DropUser {
        user: String,
    },
    /// The gateway's login `<db>_gateway`: LOGIN (while the tenant is
    /// active), NOINHERIT, member of the member groups, a generated password.
    CreateGatewayLogin {
        role: String,
        login: bool,
        connection_limit: i32,
    },
    UpdateGatewayLogin {
        role: String,
        diffs: Vec<Diff>,
        /// Send a new verifier (the password changed or is unknown to the server).
        set_password: bool,
        /// Memberships to take away.
        revoke: Vec<String>,
    },
    DropDatabase {
        database: String,
        /// Deletion protection as last applied (kept in the database's marker).
        protected: bool,
    },
    DropRole {
        role: String,
        kind: Kind,
    },
}

/// `+`, `~` or `-`: how a change counts in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Add,
    Change,
    Destroy,
}

impl Change {
    pub fn sign(&self) -> Sign {
        match self {
            Change::CreateRole { .. }
            | Change::CreateDatabase { .. }
            | Change::CreateUser { .. }
            | Change::CreateGatewayLogin { .. } => Sign::Add,
            Change::DropUser { .. } | Change::DropDatabase { .. } | Change::DropRole { .. } => {
                Sign::Destroy
            }
            Change::Privileges { diffs, .. } if diffs.is_empty() => Sign::Add,
            Change::TokenStore { diffs, .. } if diffs.is_empty() => Sign::Add,
            Change::Migrate { from: None, .. } => Sign::Add,
            _ => Sign::Change,
        }
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// (to add, to change, to destroy), counted per change.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.count(|_| true)
    }

    /// [`counts`](Self::counts) of what runs without `--allow-destroy`'s
    /// leftovers.
    pub fn counts_without_leftovers(&self) -> (usize, usize, usize) {
        self.count(|t| t.action != Action::Leftover)
    }

    fn count(&self, keep: impl Fn(&TenantPlan) -> bool) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for c in self
            .tenants
            .iter()
            .filter(|t| keep(t))
            .flat_map(|t| &t.changes)
        {
            match c.sign() {
                Sign::Add => n.0 += 1,
                Sign::Change => n.1 += 1,
                Sign::Destroy => n.2 += 1,
            }
        }
        n
    }

    /// Tenants to destroy that are still deletion-protected (a copy a
    /// move left is not the tenant, which lives elsewhere: its marker's
    /// protection does not hold it).
    pub fn protected_destroys(&self) -> Vec<&str> {
        self.tenants
            .iter()
            .filter(|t| t.action != Action::Leftover)
            .filter(|t| {
                t.changes.iter().any(|c| {
                    matches!(
                        c,
                        Change::DropDatabase {
                            protected: true,
                            ..
                        }
                    )
                })
            })
            .map(|t| t.tenant.as_str())
            .collect()
    }

    pub fn has_destroys(&self) -> bool {
        self.tenants.iter().any(|t| t.action == Action::Destroy)
    }

    /// Whether this plan may run: no conflicts, no deletion-protected
    /// tenant to destroy, and destroys only when `allow_destroy` (the
    /// user's explicit `--allow-destroy`). Apply backs a tenant up before it
    /// drops it; this rule decides whether it may drop it at all.
    pub fn check_runnable(&self, allow_destroy: bool) -> Result<(), Refusal> {
        if !self.conflicts.is_empty() {
            return Err(Refusal::Conflicts(self.conflicts.len()));
        }
        let protected = self.protected_destroys();
        if !protected.is_empty() {
            return Err(Refusal::Protected(
                protected.into_iter().map(str::to_owned).collect(),
            ));
        }
        if self.has_destroys() && !allow_destroy {
            return Err(Refusal::DestroyNotAllowed);
        }
        Ok(())
    }
}

/// Why a plan may not run (see [`Plan::check_runnable`]); nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} conflict(s) above: nothing was changed")]
    Conflicts(usize),
    #[error("refusing to destroy {}: deletion_protection is on. Put the tenant back, set deletion_protection = false, apply, then remove it and apply with --allow-destroy. Nothing was changed.", .0.join(", "))]
    Protected(Vec<String>),
    #[error("this plan destroys tenants; re-run with --allow-destroy to back them up and drop them. Nothing was changed.")]
    DestroyNotAllowed,
    #[error("server(s) {} could not be read (see above): nothing was changed. Bring them back, or re-run with --skip-unreachable to apply to the other servers", .0.join(", "))]
    Unreachable(Vec<String>),
}
