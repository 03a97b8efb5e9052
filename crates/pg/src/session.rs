//! One planning session: connect, (optionally) take the apply lock, read the
//! catalog, and plan. Shared by `plan`, `apply`, `list` and `show`.

use std::time::Duration;

use tenantry_manifest::{Group, Inventory};
use tenantry_plan::model::{Desired, Observed};
use tenantry_plan::Plan;
use tokio_postgres::Client;

use crate::connect::Admin;
use crate::error::Error;
use crate::migrate::Migrations;

pub struct Session {
    pub admin: Admin,
    /// The admin connection; holds the apply lock when one was taken.
    pub client: Client,
    pub migrations: Migrations,
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
}

/// Every database and role name the inventory wants.
pub fn wanted_names(inventory: &Inventory) -> Vec<String> {
    let mut names = Vec::new();
    for t in &inventory.tenants {
        names.push(t.name.to_string());
        names.extend(Group::ALL.iter().map(|&g| t.role(g).to_string()));
        names.extend(t.users.iter().map(|u| u.name.to_string()));
        names.push(t.gateway.name.to_string());
    }
    names
}

/// Connects and plans a file with one server. With `lock`, the fleet's
/// apply lock is taken first (waiting up to the given time), so the plan is
/// what apply will run. (A file with several servers: [`crate::sessions`].)
pub async fn open(
    inventory: &Inventory,
    jobs: usize,
    lock: Option<Duration>,
) -> Result<Session, Error> {
    let schema = inventory.paths.schema.clone();
    let migrations = crate::blocking::run(move || Migrations::load(&schema)).await?;
    let mut admin = Admin::from_url(inventory.only_server()?.admin_url.as_ref())?;
    if lock.is_some() {
        admin.set_application_name(&format!("tenantry apply {}", inventory.fleet));
    }
    let client = admin.connect(None).await?;
    if let Some(timeout) = lock {
        crate::lock::acquire(&client, &inventory.fleet, timeout).await?;
        crate::lock::await_orphans(&client, admin.application_name(), timeout).await?;
    }
    plan_on(admin, client, inventory, migrations, jobs).await
}

/// Reads one server's catalog for `inventory`'s tenants (a one-server file
/// or one server's share of a fleet) and plans. Reading files and planning
/// (PBKDF2 over every stored verifier) run on the blocking pool
/// ([`crate::blocking`]).
pub(crate) async fn plan_on(
    admin: Admin,
    client: Client,
    inventory: &Inventory,
    migrations: Migrations,
    jobs: usize,
) -> Result<Session, Error> {
    plan_on_with(admin, client, inventory, migrations, jobs, |_| {}).await
}

/// [`plan_on`], with the desired state adjusted by `adjust` first (a move
/// plans the copy it fills: closed, marked as incoming).
pub(crate) async fn plan_on_with(
    admin: Admin,
    client: Client,
    inventory: &Inventory,
    migrations: Migrations,
    jobs: usize,
    adjust: impl FnOnce(&mut Desired),
) -> Result<Session, Error> {
    let mut desired = desired(inventory, migrations.latest()).await?;
    adjust(&mut desired);
    let observed = crate::introspect::observe(
        &admin,
        &client,
        &inventory.fleet,
        &wanted_names(inventory),
        jobs,
    )
    .await?;
    let (desired, observed, plan) = crate::blocking::run(move || {
        let plan = tenantry_plan::plan(&desired, &observed);
        (desired, observed, plan)
    })
    .await;
    Ok(Session {
        admin,
        client,
        migrations,
        desired,
        observed,
        plan,
    })
}

/// The desired state, password files read on the blocking pool.
pub(crate) async fn desired(
    inventory: &Inventory,
    schema_version: Option<i64>,
) -> Result<Desired, Error> {
    let inventory = inventory.clone();
    crate::blocking::run(move || {
        Desired::from_inventory(&inventory, schema_version, |l| l.load_password())
    })
    .await
    .map_err(Error::from)
}
