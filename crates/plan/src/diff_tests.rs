//! Unit tests of the planner (no database).

use super::*;

use secrecy::SecretString;

use crate::model::{
    DesiredGateway, DesiredUser, ObservedDatabase, ObservedFunction, ObservedRelation,
    ObservedRole, PublicOwner,
};
use crate::render;
use tenantry_layout::Ident;

const FLEET: &str = "prod";

// ---------------------------------------------------------------- helpers

/// The password a test user has in the desired state (never printed).
fn password_of(user: &str) -> String {
    format!("S3cret-{user}-Zq9!")
}

fn id(name: &str) -> Ident {
    Ident::parse(name).unwrap()
}

fn user(name: &str, group: Group) -> DesiredUser {
    DesiredUser {
        name: id(name),
        group,
        password: Some(SecretString::from(password_of(name))),
        password_source: format!("file secrets/{name}.password"),
    }
}

/// An active, protected tenant on a 5-connection / 5s tier with one user per
/// member group: `<name>_alice` (admin), `<name>_bob` (developer), `<name>_carol`
/// (customer).
fn tenant(name: &str) -> DesiredTenant {
    DesiredTenant {
        name: id(name),
        plan: "standard".to_owned(),
        status: Status::Active,
        deletion_protection: true,
        connection_limit: 5,
        statement_timeout_ms: 5_000,
        statement_timeout: "5s".to_owned(),
        users: vec![
            user(&format!("{name}_alice"), Group::Admin),
            user(&format!("{name}_bob"), Group::Developer),
            user(&format!("{name}_carol"), Group::Customer),
        ],
        gateway: DesiredGateway {
            name: tenantry_layout::gateway_login(&id(name)),
            password: Some(SecretString::from(password_of(&format!("{name}_gateway")))),
        },
        moving: None,
    }
}

fn desired_in(fleet: &str, tenants: Vec<DesiredTenant>) -> Desired {
    Desired {
        fleet: fleet.to_owned(),
        tenants,
        schema_version: Some(3),
    }
}

fn desired(tenants: Vec<DesiredTenant>) -> Desired {
    desired_in(FLEET, tenants)
}

fn privs(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

fn marker(fleet: &str, tenant: &str, kind: Kind) -> String {
    Marker::new(fleet, tenant, kind).render()
}

fn db_marker(fleet: &str, tenant: &str, protected: Option<bool>) -> String {
    let mut m = Marker::new(fleet, tenant, Kind::Database);
    m.protected = protected;
    m.render()
}

/// The token store exactly as `tokens::setup` leaves it.
fn converged_gateway(d: &Desired, t: &DesiredTenant) -> ObservedRole {
    ObservedRole {
        name: t.gateway.name.to_string(),
        login: t.status == Status::Active,
        connection_limit: t.connection_limit,
        config: vec![format!("statement_timeout={}", t.statement_timeout)],
        comment: Some(marker(&d.fleet, &t.name, Kind::Gateway)),
        password: Some(scram::verifier_iterations(
            &password_of(t.gateway.name.as_str()),
            tenantry_layout::roles::GATEWAY_SCRAM_ITERATIONS,
        )),
        member_of: Group::MEMBERS
            .iter()
            .map(|&g| t.role(g).to_string())
            .collect(),
        inherit: false,
        ..ObservedRole::default()
    }
}

fn converged_token_store(t: &DesiredTenant) -> ObservedTokenStore {
    let owner = t.role(Group::Owner).to_string();
    let want = tokens::Expected::of(&t.name);
    let acl = |grants: tokens::Grants, own: &[&str]| -> Acl {
        let mut acl: Acl = grants
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(g, p)| (g, privs(p)))
            .collect();
        acl.insert(owner.clone(), privs(own));
        acl
    };
    let table = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ];
    ObservedTokenStore {
        schema: Some(ObservedObject {
            owner: owner.clone(),
            acl: acl(want.schema(), &["USAGE", "CREATE"]),
        }),
        table: Some(ObservedObject {
            owner: owner.clone(),
            acl: acl(want.token_table(), &table),
        }),
        usage: Some(ObservedObject {
            owner: owner.clone(),
            acl: acl(want.usage_table(), &table),
        }),
        audit: Some(ObservedObject {
            owner: owner.clone(),
            acl: acl(want.audit_table(), &table),
        }),
        function: Some(ObservedFunction {
            owner: owner.clone(),
            acl: acl(want.function(), &["EXECUTE"]),
            security_definer: true,
            config: vec![tokens::FUNCTION_CONFIG.to_owned()],
            body: tokens::FUNCTION_BODY.to_owned(),
            returns: "text".to_owned(),
        }),
    }
}

fn empty_observed() -> Observed {
    Observed {
        current_user: "tenantry".to_owned(),
        current_user_is_superuser: true,
        can_read_passwords: true,
        ..Observed::default()
    }
}

/// Adds to `o` the objects of every tenant of `d` exactly as apply leaves them.
fn add_converged(o: &mut Observed, d: &Desired) {
    for t in &d.tenants {
        let db = t.name.as_str();
        let owner = t.role(Group::Owner).to_string();
        o.roles
            .insert(t.gateway.name.to_string(), converged_gateway(d, t));
        for group in Group::ALL {
            let name = t.role(group).to_string();
            o.roles.insert(
                name.clone(),
                ObservedRole {
                    name,
                    connection_limit: -1,
                    comment: Some(marker(&d.fleet, db, Kind::of(group))),
                    ..ObservedRole::default()
                },
            );
        }
        let members = |f: fn(Group) -> &'static [&'static str]| -> Acl {
            Group::MEMBERS
                .iter()
                .filter(|&&g| !f(g).is_empty())
                .map(|&g| (t.role(g).to_string(), privs(f(g))))
                .collect()
        };
        let mut db_acl = members(|_| DATABASE_PRIVILEGES);
        db_acl.insert(t.gateway.name.to_string(), privs(&["CONNECT"]));
        db_acl.insert(owner.clone(), privs(&["CREATE", "CONNECT", "TEMPORARY"]));
        o.databases.insert(
            t.name.to_string(),
            ObservedDatabase {
                name: t.name.to_string(),
                owner: owner.clone(),
                allow_connections: true,
                comment: Some(db_marker(&d.fleet, db, Some(t.deletion_protection))),
                acl: db_acl,
            },
        );
        let mut schema_acl = members(|_| &["USAGE"]);
        schema_acl.insert(owner.clone(), privs(&["USAGE", "CREATE"]));
        schema_acl.insert(t.gateway.name.to_string(), privs(&["USAGE"]));
        let owner_all = privs(&[
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ]);
        let mut customers = members(Group::table_privileges);
        customers.insert(owner.clone(), owner_all.clone());
        let mut sequence = members(Group::sequence_privileges);
        sequence.insert(owner.clone(), privs(&["USAGE", "SELECT", "UPDATE"]));
        let history: Acl = [
            (owner.clone(), owner_all),
            (
                t.gateway.name.to_string(),
                privs(history::GATEWAY_PRIVILEGES),
            ),
        ]
        .into_iter()
        .collect();
        o.contents.insert(
            t.name.to_string(),
            ObservedContents {
                schema_owner: owner.clone(),
                schema_acl,
                relations: vec![
                    ObservedRelation {
                        name: "customers".to_owned(),
                        kind: RelKind::Table,
                        owner: owner.clone(),
                        acl: customers,
                    },
                    ObservedRelation {
                        name: "customers_id_seq".to_owned(),
                        kind: RelKind::Sequence,
                        owner: owner.clone(),
                        acl: sequence,
                    },
                    ObservedRelation {
                        name: history::TABLE.to_owned(),
                        kind: RelKind::Table,
                        owner: owner.clone(),
                        acl: history,
                    },
                ],
                default_acl: [
                    ('r', members(Group::table_privileges)),
                    ('S', members(Group::sequence_privileges)),
                ]
                .into_iter()
                .collect(),
                migration_version: d.schema_version,
                token_store: converged_token_store(t),
            },
        );
        for u in &t.users {
            o.roles.insert(
                u.name.to_string(),
                ObservedRole {
                    name: u.name.to_string(),
                    login: t.status == Status::Active,
                    connection_limit: t.connection_limit,
                    config: vec![format!("statement_timeout={}", t.statement_timeout)],
                    comment: Some(marker(&d.fleet, db, Kind::User)),
                    password: Some(scram::verifier(&password_of(&u.name))),
                    member_of: [t.role(u.group).to_string()].into_iter().collect(),
                    inherit: true,
                    ..ObservedRole::default()
                },
            );
        }
    }
}

/// A catalog that matches `d` exactly.
fn converged_observed(d: &Desired) -> Observed {
    let mut o = empty_observed();
    add_converged(&mut o, d);
    o
}

fn tenant_plan<'a>(plan: &'a Plan, name: &str) -> &'a TenantPlan {
    plan.tenants
        .iter()
        .find(|t| t.tenant == name)
        .unwrap_or_else(|| panic!("no plan for tenant {name}: {plan:#?}"))
}

/// The only change of the only tenant in the plan.
fn only_change<'a>(plan: &'a Plan, name: &str) -> &'a Change {
    assert_eq!(plan.tenants.len(), 1, "{plan:#?}");
    let t = tenant_plan(plan, name);
    assert_eq!(t.action, Action::Update, "{plan:#?}");
    assert_eq!(t.changes.len(), 1, "{plan:#?}");
    &t.changes[0]
}

fn role_mut<'a>(o: &'a mut Observed, name: &str) -> &'a mut ObservedRole {
    o.roles.get_mut(name).expect("role exists")
}

fn relation_mut<'a>(o: &'a mut Observed, db: &str, rel: &str) -> &'a mut ObservedRelation {
    o.contents
        .get_mut(db)
        .expect("contents")
        .relations
        .iter_mut()
        .find(|r| r.name == rel)
        .expect("relation exists")
}

fn d(what: &str, old: &str, new: &str) -> Diff {
    Diff::new(what, old, new)
}

// ---------------------------------------------------------------- create

#[test]
fn empty_catalog_creates_everything() {
    let want = desired(vec![tenant("shop")]);
    let plan = plan(&want, &empty_observed());

    assert!(plan.conflicts.is_empty() && plan.warnings.is_empty());
    assert_eq!(plan.fleet, FLEET);
    assert_eq!(plan.tenants.len(), 1);
    let t = tenant_plan(&plan, "shop");
    assert_eq!(t.action, Action::Create);
    let c = &t.changes;
    assert_eq!(c.len(), 12, "{c:#?}");
    assert!(
        matches!(&c[11], Change::CreateGatewayLogin { role, login: true, connection_limit: 5 }
        if role == "shop_gateway")
    );
    let groups = [
        ("shop_owner", Kind::Owner),
        ("shop_admin", Kind::Admin),
        ("shop_developer", Kind::Developer),
        ("shop_customer", Kind::Customer),
    ];
    for (i, (name, k)) in groups.into_iter().enumerate() {
        assert!(
            matches!(&c[i], Change::CreateRole { role, kind } if role == name && *kind == k),
            "{i}: {:?}",
            c[i]
        );
    }
    assert!(matches!(&c[4], Change::CreateDatabase { database, owner }
        if database == "shop" && owner == "shop_owner"));
    assert!(matches!(&c[5], Change::Migrate { database, from: None, to: 3 } if database == "shop"));
    assert!(
        matches!(&c[6], Change::Privileges { database, diffs, foreign_grantees }
        if database == "shop" && diffs.is_empty() && foreign_grantees.is_empty())
    );
    assert!(
        matches!(&c[7], Change::TokenStore { database, diffs, foreign_grantees, reown: false }
        if database == "shop" && diffs.is_empty() && foreign_grantees.is_empty())
    );
    let users = [
        ("shop_alice", Group::Admin),
        ("shop_bob", Group::Developer),
        ("shop_carol", Group::Customer),
    ];
    for (i, (name, g)) in users.into_iter().enumerate() {
        match &c[8 + i] {
            Change::CreateUser {
                user,
                group,
                login,
                connection_limit,
                statement_timeout,
                password_source,
            } => {
                assert_eq!(user, name);
                assert_eq!(*group, g);
                assert!(*login);
                assert_eq!(*connection_limit, 5);
                assert_eq!(statement_timeout, "5s");
                assert_eq!(password_source, &format!("file secrets/{name}.password"));
            }
            other => panic!("expected CreateUser for {name}, got {other:?}"),
        }
    }
    assert_eq!(plan.counts(), (12, 0, 0));
    assert!(!plan.is_empty());
    assert!(!plan.has_destroys());
    assert!(plan.protected_destroys().is_empty());
    let text = render::text(&plan);
    assert!(text.contains("+ tenant shop will be created"), "{text}");
    assert!(
        text.contains("Plan: 12 to add, 0 to change, 0 to destroy."),
        "{text}"
    );
}

#[test]
fn no_migrations_means_no_migrate_step() {
    let mut want = desired(vec![tenant("shop")]);
    want.schema_version = None;
    let plan = plan(&want, &empty_observed());
    let c = &tenant_plan(&plan, "shop").changes;
    assert!(
        !c.iter().any(|c| matches!(c, Change::Migrate { .. })),
        "{c:#?}"
    );
    assert_eq!(plan.counts(), (11, 0, 0));
}

// ---------------------------------------------------------------- gateway login

#[test]
fn the_gateway_login_that_inherits_or_holds_more_is_repaired() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let gw = o.roles.get_mut("shop_gateway").unwrap();
    gw.inherit = true;
    gw.member_of.insert("shop_owner".to_owned());
    gw.member_of.remove("shop_customer");
    // Its own password, but at 4096 rounds: the gateway's count is 16.
    gw.password = Some(scram::verifier(&password_of("shop_gateway")));
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::UpdateGatewayLogin {
            role,
            diffs,
            set_password,
            revoke,
        } => {
            assert_eq!(role, "shop_gateway");
            assert!(*set_password);
            assert_eq!(revoke, &["shop_owner"]);
            assert_eq!(
                diffs,
                &[
                    d("inherit", "true", "false"),
                    d("member of shop_customer", "no", "yes"),
                    d("member of shop_owner", "yes", "no"),
                    d("password", "(hidden)", "(changed)"),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unmarked_role_named_like_the_gateway_login_is_a_conflict() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.roles.get_mut("shop_gateway").unwrap().comment = None;
    let plan = plan(&want, &o);
    assert_eq!(plan.conflicts.len(), 1, "{:#?}", plan.conflicts);
    assert_eq!(plan.conflicts[0].name, "shop_gateway");
}

// ---------------------------------------------------------------- token store

fn token_store_change(plan: &Plan) -> (&[Diff], &[String], bool) {
    let c = &tenant_plan(plan, "shop").changes;
    assert_eq!(c.len(), 1, "{c:#?}");
    match &c[0] {
        Change::TokenStore {
            diffs,
            foreign_grantees,
            reown,
            ..
        } => (diffs, foreign_grantees, *reown),
        other => panic!("expected a token store change, got {other:?}"),
    }
}

#[test]
fn a_tenant_made_before_the_token_store_gets_one() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents.get_mut("shop").unwrap().token_store = ObservedTokenStore::default();
    let plan = plan(&want, &o);
    let (diffs, foreign, reown) = token_store_change(&plan);
    assert_eq!(
        diffs,
        [d("token store: schema tenantry", "(missing)", "present")]
    );
    assert!(foreign.is_empty() && !reown);
    let text = render::text(&plan);
    assert!(text.contains("~ token store in shop"), "{text}");
}

#[test]
fn an_altered_lookup_function_is_repaired() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let store = &mut o.contents.get_mut("shop").unwrap().token_store;
    let f = store.function.as_mut().unwrap();
    f.security_definer = false;
    f.config.clear();
    f.body = " SELECT 'admin' ".to_owned();
    f.acl.insert("PUBLIC".to_owned(), privs(&["EXECUTE"]));
    let plan = plan(&want, &o);
    let (diffs, foreign, reown) = token_store_change(&plan);
    let what = "token store: function tenantry.token_role(text)";
    assert_eq!(
        diffs,
        [
            d(&format!("{what}: PUBLIC"), "EXECUTE", "(none)"),
            d(&format!("{what}: security"), "invoker", "definer"),
            d(
                &format!("{what}: settings"),
                "",
                "search_path=pg_catalog, pg_temp"
            ),
            d(&format!("{what}: body"), "(altered)", "(tenantry's)"),
        ]
    );
    assert_eq!(foreign, ["PUBLIC"]);
    assert!(!reown);
}

#[test]
fn a_dropped_function_a_readable_table_and_a_foreign_owner_are_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let store = &mut o.contents.get_mut("shop").unwrap().token_store;
    store.function = None;
    let table = store.table.as_mut().unwrap();
    table
        .acl
        .insert("shop_customer".to_owned(), privs(&["SELECT"]));
    store.schema.as_mut().unwrap().owner = "mallory".to_owned();
    let plan = plan(&want, &o);
    let (diffs, _, reown) = token_store_change(&plan);
    assert!(reown, "{diffs:?}");
    assert!(diffs.contains(&d(
        "token store: schema tenantry: owner",
        "mallory",
        "shop_owner"
    )));
    assert!(diffs.contains(&d(
        "token store: table tenantry.tokens: shop_customer",
        "SELECT",
        "(none)"
    )));
    assert!(diffs.contains(&d(
        "token store: function tenantry.token_role(text)",
        "(missing)",
        "present"
    )));
}

// ---------------------------------------------------------------- converged

#[test]
fn converged_catalog_plans_nothing() {
    let want = desired(vec![tenant("shop"), tenant("cafe")]);
    let plan = plan(&want, &converged_observed(&want));
    assert!(plan.is_empty(), "{plan:#?}");
    assert!(plan.conflicts.is_empty() && plan.warnings.is_empty());
    assert_eq!(plan.counts(), (0, 0, 0));
    let text = render::text(&plan);
    assert!(text.starts_with("No changes."), "{text}");
}

#[test]
fn equivalent_statement_timeout_spellings_are_not_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    role_mut(&mut o, "shop_alice").config = vec!["statement_timeout=5000ms".to_owned()];
    role_mut(&mut o, "shop_bob").config = vec![
        "search_path=public".to_owned(),
        "statement_timeout=5000".to_owned(),
    ];
    let plan = plan(&want, &o);
    assert!(plan.is_empty(), "{plan:#?}");
}

// ---------------------------------------------------------------- privileges

#[test]
fn hand_granted_delete_is_privilege_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    relation_mut(&mut o, "shop", "customers")
        .acl
        .get_mut("shop_developer")
        .unwrap()
        .insert("DELETE".to_owned());
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Privileges {
            database,
            diffs,
            foreign_grantees,
        } => {
            assert_eq!(database, "shop");
            assert_eq!(
                diffs,
                &[d(
                    "table customers: shop_developer",
                    "SELECT, INSERT, UPDATE, DELETE",
                    "SELECT, INSERT, UPDATE"
                )]
            );
            assert!(foreign_grantees.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.counts(), (0, 1, 0));
    let text = render::text(&plan);
    assert!(
        text.contains("~ tenant shop will be updated in place"),
        "{text}"
    );
    assert!(
        text.contains("table customers: shop_developer: SELECT, INSERT, UPDATE, DELETE -> SELECT, INSERT, UPDATE"),
        "{text}"
    );
}

#[test]
fn missing_sequence_and_extra_history_privileges_are_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    relation_mut(&mut o, "shop", "customers_id_seq")
        .acl
        .remove("shop_admin");
    relation_mut(&mut o, "shop", history::TABLE)
        .acl
        .insert("shop_customer".to_owned(), privs(&["SELECT"]));
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Privileges {
            diffs,
            foreign_grantees,
            ..
        } => {
            assert_eq!(
                diffs,
                &[
                    d(
                        "sequence customers_id_seq: shop_admin",
                        "(none)",
                        "SELECT, USAGE"
                    ),
                    d(
                        "table refinery_schema_history: shop_customer",
                        "SELECT",
                        "(none)"
                    ),
                ]
            );
            assert!(foreign_grantees.is_empty(), "a tenant group is not foreign");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn foreign_table_grantee_is_reported() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    relation_mut(&mut o, "shop", "customers")
        .acl
        .insert("analyst".to_owned(), privs(&["SELECT"]));
    relation_mut(&mut o, "shop", "customers_id_seq")
        .acl
        .insert("analyst".to_owned(), privs(&["USAGE"]));
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Privileges {
            diffs,
            foreign_grantees,
            ..
        } => {
            assert_eq!(foreign_grantees, &["analyst".to_owned()], "listed once");
            assert_eq!(
                diffs,
                &[
                    d("table customers: analyst", "SELECT", "(none)"),
                    d("sequence customers_id_seq: analyst", "USAGE", "(none)"),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn foreign_database_grantee_and_missing_connect() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let db = o.databases.get_mut("shop").unwrap();
    db.acl
        .insert("PUBLIC".to_owned(), privs(&["CONNECT", "TEMPORARY"]));
    db.acl.get_mut("shop_customer").unwrap().remove("CONNECT");
    db.allow_connections = false;
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::UpdateDatabase {
            database,
            diffs,
            foreign_grantees,
        } => {
            assert_eq!(database, "shop");
            assert_eq!(
                diffs,
                &[
                    d("allow_connections", "false", "true"),
                    d("database: shop_customer", "TEMPORARY", "CONNECT, TEMPORARY"),
                    d("database: PUBLIC", "CONNECT, TEMPORARY", "(none)"),
                ]
            );
            assert_eq!(foreign_grantees, &["PUBLIC".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_moves_streaming_login_is_not_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let mover = tenantry_layout::moves::replication_name(&want.fleet, "shop");
    o.databases
        .get_mut("shop")
        .unwrap()
        .acl
        .insert(mover, privs(&["CONNECT"]));
    assert!(plan(&want, &o).is_empty(), "{:?}", plan(&want, &o));
}

#[test]
fn default_privilege_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents
        .get_mut("shop")
        .unwrap()
        .default_acl
        .get_mut(&'r')
        .unwrap()
        .get_mut("shop_customer")
        .unwrap()
        .insert("INSERT".to_owned());
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Privileges {
            diffs,
            foreign_grantees,
            ..
        } => {
            assert_eq!(
                diffs,
                &[d(
                    "default privileges on tables: shop_customer",
                    "SELECT, INSERT",
                    "SELECT"
                )]
            );
            assert!(foreign_grantees.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn schema_owner_and_missing_default_acl_are_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let c = o.contents.get_mut("shop").unwrap();
    c.schema_owner = "pg_database_owner".to_owned();
    c.default_acl.remove(&'S');
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Privileges { diffs, .. } => assert_eq!(
            diffs,
            &[
                d("schema public: owner", "pg_database_owner", "shop_owner"),
                d(
                    "default privileges on sequences: shop_admin",
                    "(none)",
                    "SELECT, USAGE"
                ),
                d(
                    "default privileges on sequences: shop_developer",
                    "(none)",
                    "SELECT, USAGE"
                ),
            ]
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- users

#[test]
fn user_attribute_and_membership_drift() {
    let want = desired(vec![tenant("shop"), tenant("cafe")]);
    let mut o = converged_observed(&want);
    let alice = role_mut(&mut o, "shop_alice");
    alice.connection_limit = 10;
    alice.member_of.insert("cafe_admin".to_owned());
    role_mut(&mut o, "shop_bob").config = vec!["statement_timeout=30s".to_owned()];
    role_mut(&mut o, "shop_carol").member_of.clear();
    let plan = plan(&want, &o);

    assert_eq!(plan.tenants.len(), 1, "{plan:#?}");
    let t = tenant_plan(&plan, "shop");
    assert_eq!(t.action, Action::Update);
    assert_eq!(t.changes.len(), 3, "{:#?}", t.changes);
    let expected: [(&str, Group, Vec<Diff>, Vec<&str>); 3] = [
        (
            "shop_alice",
            Group::Admin,
            vec![
                d("connection limit", "10", "5"),
                d("member of cafe_admin", "yes", "no"),
            ],
            vec!["cafe_admin"],
        ),
        (
            "shop_bob",
            Group::Developer,
            vec![d("statement_timeout", "30s", "5s")],
            vec![],
        ),
        (
            "shop_carol",
            Group::Customer,
            vec![d("member of shop_customer", "no", "yes")],
            vec![],
        ),
    ];
    for (change, (name, g, want_diffs, want_revoke)) in t.changes.iter().zip(expected) {
        match change {
            Change::UpdateUser {
                user,
                group,
                diffs,
                set_password,
                revoke,
            } => {
                assert_eq!(user, name);
                assert_eq!(*group, g);
                assert_eq!(diffs, &want_diffs, "{name}");
                assert!(!set_password, "{name}");
                assert_eq!(revoke, &want_revoke, "{name}");
            }
            other => panic!("expected UpdateUser for {name}, got {other:?}"),
        }
    }
    assert_eq!(plan.counts(), (0, 3, 0));
}

#[test]
fn unset_statement_timeout_is_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    role_mut(&mut o, "shop_bob").config.clear();
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::UpdateUser { user, diffs, .. } => {
            assert_eq!(user, "shop_bob");
            assert_eq!(diffs, &[d("statement_timeout", "(unset)", "5s")]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn password_drift_is_shown_but_never_the_password() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let other_password = "Other-Pa55word-Xy7";
    role_mut(&mut o, "shop_bob").password = Some(scram::verifier(other_password));
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::UpdateUser {
            user,
            diffs,
            set_password,
            revoke,
            ..
        } => {
            assert_eq!(user, "shop_bob");
            assert!(*set_password);
            assert_eq!(diffs, &[d("password", "(hidden)", "(changed)")]);
            assert!(revoke.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let text = render::text(&plan);
    let json = render::json(&plan);
    assert!(text.contains("password: (hidden) -> (changed)"), "{text}");
    for secret in [password_of("shop_bob").as_str(), other_password] {
        assert!(!text.contains(secret), "text leaks a password:\n{text}");
        assert!(!json.contains(secret), "JSON leaks a password:\n{json}");
    }
}

#[test]
fn missing_or_non_scram_verifier_resets_the_password() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    role_mut(&mut o, "shop_alice").password = None;
    role_mut(&mut o, "shop_bob").password = Some("md5d0763edaa9d9bd2a9516280e9044d885".to_owned());
    let plan = plan(&want, &o);
    let t = tenant_plan(&plan, "shop");
    assert_eq!(t.changes.len(), 2, "{:#?}", t.changes);
    for (change, name) in t.changes.iter().zip(["shop_alice", "shop_bob"]) {
        assert!(
            matches!(change, Change::UpdateUser { user, set_password: true, diffs, .. }
                if user == name && diffs == &[d("password", "(hidden)", "(changed)")]),
            "{change:?}"
        );
    }
}

#[test]
fn a_verifier_with_too_many_iterations_is_drift_even_for_the_right_password() {
    // A tenant user may store its own verifier: one of the right password,
    // but with more rounds than plan will compute, is reset like a wrong one.
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let rounds = *scram::VERIFIABLE_ITERATIONS.end() + 1;
    let heavy = scram::verifier_with(&password_of("shop_bob"), b"0123456789abcdef", rounds);
    role_mut(&mut o, "shop_bob").password = Some(heavy);
    let plan = plan(&want, &o);
    assert!(
        matches!(only_change(&plan, "shop"), Change::UpdateUser { user, set_password: true, diffs, .. }
            if user == "shop_bob" && diffs == &[d("password", "(hidden)", "(changed)")]),
        "{plan:#?}"
    );
}

#[test]
fn unreadable_verifiers_never_reset_passwords() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.can_read_passwords = false;
    o.current_user_is_superuser = false;
    for r in o.roles.values_mut() {
        r.password = None;
    }
    let plan = plan(&want, &o);
    assert!(plan.is_empty(), "{plan:#?}");
}

#[test]
fn password_not_yet_generated_is_set() {
    let mut shop = tenant("shop");
    shop.users[0].password = None;
    shop.users[0].password_source = "generated".to_owned();
    let want = desired(vec![shop]);
    for readable in [true, false] {
        let mut o = converged_observed(&want);
        o.can_read_passwords = readable;
        let plan = plan(&want, &o);
        match only_change(&plan, "shop") {
            Change::UpdateUser {
                user,
                diffs,
                set_password,
                revoke,
                ..
            } => {
                assert_eq!(user, "shop_alice", "readable={readable}");
                assert!(*set_password, "readable={readable}");
                assert_eq!(diffs, &[d("password", "(hidden)", "(changed)")]);
                assert!(revoke.is_empty());
            }
            other => panic!("readable={readable}: {other:?}"),
        }
    }
}

#[test]
fn suspended_tenant_users_lose_login() {
    let active = desired(vec![tenant("shop")]);
    let o = converged_observed(&active);
    let mut shop = tenant("shop");
    shop.status = Status::Suspended;
    let suspended = desired(vec![shop]);
    let plan = plan(&suspended, &o);
    let t = tenant_plan(&plan, "shop");
    assert_eq!(t.action, Action::Update);
    let names: Vec<&str> = t
        .changes
        .iter()
        .map(|c| match c {
            Change::UpdateUser {
                user,
                diffs,
                set_password: false,
                revoke,
                ..
            } if diffs == &[d("login", "true", "false")] && revoke.is_empty() => user.as_str(),
            Change::UpdateGatewayLogin {
                role,
                diffs,
                set_password: false,
                revoke,
            } if diffs == &[d("login", "true", "false")] && revoke.is_empty() => role.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        ["shop_alice", "shop_bob", "shop_carol", "shop_gateway"]
    );

    // A suspended tenant created from scratch gets NOLOGIN users.
    let plan = plan_fn(&suspended, &empty_observed());
    let creates: Vec<bool> = tenant_plan(&plan, "shop")
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateUser { login, .. } => Some(*login),
            _ => None,
        })
        .collect();
    assert_eq!(creates, [false, false, false]);
    assert!(render::text(&plan).contains("NOLOGIN: suspended"));
}

/// `plan` shadowed by a local in some tests.
fn plan_fn(d: &Desired, o: &Observed) -> Plan {
    plan(d, o)
}

#[test]
fn forbidden_attributes_are_removed() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    let dev = role_mut(&mut o, "shop_developer");
    dev.createdb = true;
    dev.login = true;
    let owner = role_mut(&mut o, "shop_owner");
    owner.member_of.insert("pg_read_all_data".to_owned());
    role_mut(&mut o, "shop_carol").superuser = true;
    let plan = plan(&want, &o);
    let c = &tenant_plan(&plan, "shop").changes;
    assert_eq!(c.len(), 3, "{c:#?}");
    match &c[0] {
        Change::UpdateRole {
            role,
            kind,
            diffs,
            revoke,
        } => {
            assert_eq!(role, "shop_owner");
            assert_eq!(*kind, Kind::Owner);
            assert_eq!(diffs, &[d("member of pg_read_all_data", "yes", "no")]);
            assert_eq!(revoke, &["pg_read_all_data".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
    match &c[1] {
        Change::UpdateRole {
            role,
            kind,
            diffs,
            revoke,
        } => {
            assert_eq!(role, "shop_developer");
            assert_eq!(*kind, Kind::Developer);
            assert_eq!(
                diffs,
                &[d("createdb", "true", "false"), d("login", "true", "false")]
            );
            assert!(revoke.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match &c[2] {
        Change::UpdateUser {
            user,
            diffs,
            set_password,
            ..
        } => {
            assert_eq!(user, "shop_carol");
            assert_eq!(diffs, &[d("superuser", "true", "false")]);
            assert!(!set_password);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- destroy

#[test]
fn removed_tenant_is_destroyed_owner_last() {
    let old = desired(vec![tenant("shop")]);
    let o = converged_observed(&old);
    let plan = plan(&desired(vec![]), &o);
    assert_eq!(plan.tenants.len(), 1);
    let t = tenant_plan(&plan, "shop");
    assert_eq!(t.action, Action::Destroy);
    let c = &t.changes;
    assert_eq!(c.len(), 9, "{c:#?}");
    assert!(
        matches!(&c[0], Change::DropDatabase { database, protected: true } if database == "shop")
    );
    assert!(
        matches!(&c[1], Change::DropRole { role, kind: Kind::Gateway } if role == "shop_gateway"),
        "{:?}",
        c[1]
    );
    for (i, name) in ["shop_alice", "shop_bob", "shop_carol"]
        .into_iter()
        .enumerate()
    {
        assert!(
            matches!(&c[2 + i], Change::DropUser { user } if user == name),
            "{:?}",
            c[2 + i]
        );
    }
    let groups = [
        ("shop_customer", Kind::Customer),
        ("shop_developer", Kind::Developer),
        ("shop_admin", Kind::Admin),
        ("shop_owner", Kind::Owner),
    ];
    for (i, (name, k)) in groups.into_iter().enumerate() {
        assert!(
            matches!(&c[5 + i], Change::DropRole { role, kind } if role == name && *kind == k),
            "{:?}",
            c[5 + i]
        );
    }
    assert!(plan.has_destroys());
    assert_eq!(plan.protected_destroys(), ["shop"]);
    // Protection wins even over --allow-destroy.
    for allow in [false, true] {
        assert_eq!(
            plan.check_runnable(allow),
            Err(crate::plan::Refusal::Protected(vec!["shop".to_owned()]))
        );
    }
    assert_eq!(plan.counts(), (0, 0, 9));
    let text = render::text(&plan);
    assert!(text.contains("- tenant shop will be destroyed"), "{text}");
    assert!(text.contains("[deletion_protection = true]"), "{text}");
    assert!(
        text.contains("Note: shop has deletion_protection"),
        "{text}"
    );
}

#[test]
fn unprotected_removed_tenant_is_not_a_protected_destroy() {
    let mut shop = tenant("shop");
    shop.deletion_protection = false;
    let o = converged_observed(&desired(vec![shop]));
    let plan = plan(&desired(vec![]), &o);
    let c = &tenant_plan(&plan, "shop").changes;
    assert!(
        matches!(&c[0], Change::DropDatabase { database, protected: false } if database == "shop")
    );
    assert!(plan.protected_destroys().is_empty());
    assert!(plan.has_destroys());
    assert_eq!(
        plan.check_runnable(false),
        Err(crate::plan::Refusal::DestroyNotAllowed)
    );
    assert_eq!(plan.check_runnable(true), Ok(()));
    assert!(!render::text(&plan).contains("Note:"));
}

#[test]
fn database_marker_without_protection_counts_as_protected() {
    let mut o = converged_observed(&desired(vec![tenant("shop")]));
    o.databases.get_mut("shop").unwrap().comment = Some(db_marker(FLEET, "shop", None));
    let plan = plan(&desired(vec![]), &o);
    assert!(matches!(
        &tenant_plan(&plan, "shop").changes[0],
        Change::DropDatabase {
            protected: true,
            ..
        }
    ));
    assert_eq!(plan.protected_destroys(), ["shop"]);
}

#[test]
fn removed_user_is_dropped_in_its_tenants_update() {
    let o = converged_observed(&desired(vec![tenant("shop")]));
    let mut shop = tenant("shop");
    shop.users.retain(|u| u.name != "shop_carol");
    let plan = plan(&desired(vec![shop]), &o);
    match only_change(&plan, "shop") {
        Change::DropUser { user } => assert_eq!(user, "shop_carol"),
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.counts(), (0, 0, 1));
    assert!(!plan.has_destroys(), "an update, not a tenant destroy");
}

#[test]
fn user_moved_to_another_tenant_is_not_dropped() {
    let o = converged_observed(&desired(vec![tenant("shop"), tenant("cafe")]));
    let mut shop = tenant("shop");
    let mut cafe = tenant("cafe");
    let carol = shop.users.pop().unwrap();
    cafe.users.push(carol);
    let plan = plan(&desired(vec![shop, cafe]), &o);
    assert_eq!(plan.tenants.len(), 1, "{plan:#?}");
    match only_change(&plan, "cafe") {
        Change::UpdateUser {
            user,
            group,
            diffs,
            set_password,
            revoke,
        } => {
            assert_eq!(user, "shop_carol");
            assert_eq!(*group, Group::Customer);
            assert_eq!(
                diffs,
                &[
                    d(
                        "marker",
                        &marker(FLEET, "shop", Kind::User),
                        &marker(FLEET, "cafe", Kind::User)
                    ),
                    d("member of cafe_customer", "no", "yes"),
                    d("member of shop_customer", "yes", "no"),
                ]
            );
            assert!(!set_password);
            assert_eq!(revoke, &["shop_customer".to_owned()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_fleets_objects_are_ignored() {
    let ours = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&ours);
    add_converged(&mut o, &desired_in("other", vec![tenant("legacy")]));
    let plan = plan(&ours, &o);
    assert!(plan.is_empty(), "{plan:#?}");
    assert!(plan.conflicts.is_empty());
    assert!(!plan.has_destroys());
}

#[test]

fn removed_tenant_after_crash_drops_its_database() {
    let mut o = converged_observed(&desired(vec![tenant("shop")]));
    o.databases.get_mut("shop").unwrap().comment = None;
    let plan = plan(&desired(vec![]), &o);
    let c = &tenant_plan(&plan, "shop").changes;
    assert!(
        matches!(&c[0], Change::DropDatabase { database, .. } if database == "shop"),
        "{c:#?}"
    );
}

// ---------------------------------------------------------------- conflicts

#[test]
fn unmanaged_database_is_a_conflict() {
    let mut o = empty_observed();
    o.databases.insert(
        "shop".to_owned(),
        ObservedDatabase {
            name: "shop".to_owned(),
            owner: "postgres".to_owned(),
            allow_connections: true,
            comment: None,
            acl: Acl::new(),
        },
    );
    let plan = plan(&desired(vec![tenant("shop"), tenant("cafe")]), &o);
    assert_eq!(plan.conflicts.len(), 1, "{:#?}", plan.conflicts);
    let c = &plan.conflicts[0];
    assert_eq!(
        (
            c.tenant.as_str(),
            c.object,
            c.name.as_str(),
            c.reason.as_str()
        ),
        (
            "shop",
            "database",
            "shop",
            "exists but is not managed by tenantry"
        )
    );
    // The other tenant is still planned; the conflicting one not at all.
    assert_eq!(plan.tenants.len(), 1);
    assert_eq!(plan.tenants[0].tenant, "cafe");
    assert_eq!(plan.tenants[0].action, Action::Create);
    let text = render::text(&plan);
    assert!(
        text.contains("error: tenant shop: database shop exists but is not managed by tenantry"),
        "{text}"
    );
}

#[test]
fn role_with_foreign_comment_is_a_conflict() {
    let mut o = empty_observed();
    o.roles.insert(
        "shop_admin".to_owned(),
        ObservedRole {
            name: "shop_admin".to_owned(),
            comment: Some("created by hand".to_owned()),
            ..ObservedRole::default()
        },
    );
    let plan = plan(&desired(vec![tenant("shop")]), &o);
    assert!(plan.tenants.is_empty(), "{plan:#?}");
    assert_eq!(plan.conflicts.len(), 1);
    let c = &plan.conflicts[0];
    assert_eq!(
        (
            c.tenant.as_str(),
            c.object,
            c.name.as_str(),
            c.reason.as_str()
        ),
        (
            "shop",
            "role",
            "shop_admin",
            "exists but is not managed by tenantry"
        )
    );
}

#[test]
fn user_name_held_by_a_group_role_is_a_conflict() {
    let o = converged_observed(&desired(vec![tenant("cafe")]));
    let mut shop = tenant("shop");
    shop.users[0].name = id("cafe_admin");
    let plan = plan(&desired(vec![tenant("cafe"), shop]), &o);
    assert!(plan.tenants.is_empty(), "{plan:#?}");
    assert_eq!(plan.conflicts.len(), 1);
    let c = &plan.conflicts[0];
    assert_eq!(
        (c.tenant.as_str(), c.object, c.name.as_str()),
        ("shop", "role", "cafe_admin")
    );
    assert_eq!(c.reason, "is managed by tenantry as admin of tenant 'cafe'");
}

#[test]
fn other_fleets_database_is_a_conflict() {
    let want = desired(vec![tenant("shop")]);
    let o = converged_observed(&desired_in("staging", vec![tenant("shop")]));
    let plan = plan(&want, &o);
    assert!(plan.tenants.is_empty(), "{plan:#?}");
    // The database, the four group roles, the gateway login and the three users.
    assert_eq!(plan.conflicts.len(), 9, "{:#?}", plan.conflicts);
    let db = &plan.conflicts[0];
    assert_eq!((db.object, db.name.as_str()), ("database", "shop"));
    assert_eq!(
        db.reason,
        "is managed by tenantry fleet 'staging', not 'prod'"
    );
    assert!(plan
        .conflicts
        .iter()
        .all(|c| c.tenant == "shop" && c.reason.contains("'staging'")));
    let text = render::text(&plan);
    assert!(text.contains("fleet 'staging'"), "{text}");
    // Not "the cluster matches the inventory": it does not.
    assert!(
        text.ends_with(
            "Nothing else to change; apply runs once the conflicts above are resolved.\n"
        ),
        "{text}"
    );
}

#[test]
fn crash_before_comment_is_ours_and_gets_its_marker() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.databases.get_mut("shop").unwrap().comment = None;
    let plan = plan(&want, &o);
    assert!(plan.conflicts.is_empty(), "{:#?}", plan.conflicts);
    match only_change(&plan, "shop") {
        Change::UpdateDatabase {
            database,
            diffs,
            foreign_grantees,
        } => {
            assert_eq!(database, "shop");
            assert_eq!(
                diffs,
                &[d("marker", "(none)", &db_marker(FLEET, "shop", Some(true)))]
            );
            assert!(foreign_grantees.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn uncommented_database_of_an_unmarked_owner_is_a_conflict() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.databases.get_mut("shop").unwrap().comment = None;
    o.databases.get_mut("shop").unwrap().owner = "postgres".to_owned();
    let plan = plan(&want, &o);
    assert!(plan.tenants.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].object, "database");
}

// ---------------------------------------------------------------- database marker

#[test]
fn deletion_protection_flip_updates_the_marker() {
    let o = converged_observed(&desired(vec![tenant("shop")]));
    let mut shop = tenant("shop");
    shop.deletion_protection = false;
    let plan = plan(&desired(vec![shop]), &o);
    match only_change(&plan, "shop") {
        Change::UpdateDatabase {
            database,
            diffs,
            foreign_grantees,
        } => {
            assert_eq!(database, "shop");
            assert_eq!(diffs, &[d("deletion_protection", "true", "false")]);
            assert!(foreign_grantees.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]

fn legacy_marker_without_protection_shows_a_real_diff() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.databases.get_mut("shop").unwrap().comment = Some(db_marker(FLEET, "shop", None));
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::UpdateDatabase { diffs, .. } => {
            assert!(diffs.iter().all(|d| d.old != d.new), "{diffs:?}");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- migrations

#[test]
fn pending_migrations_are_planned() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents.get_mut("shop").unwrap().migration_version = Some(1);
    let plan = plan(&want, &o);
    match only_change(&plan, "shop") {
        Change::Migrate { database, from, to } => {
            assert_eq!(database, "shop");
            assert_eq!(*from, Some(1));
            assert_eq!(*to, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.counts(), (0, 1, 0));
    assert!(plan.warnings.is_empty());
    assert!(render::text(&plan).contains("migrate shop: V1 -> V3"));
}

#[test]
fn empty_history_in_an_existing_database_is_migrated_from_none() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents.get_mut("shop").unwrap().migration_version = None;
    let plan = plan(&want, &o);
    assert!(matches!(
        only_change(&plan, "shop"),
        Change::Migrate {
            from: None,
            to: 3,
            ..
        }
    ));
}

#[test]
fn database_ahead_of_the_schema_directory_is_a_warning() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents.get_mut("shop").unwrap().migration_version = Some(5);
    let plan = plan(&want, &o);
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(
        plan.warnings,
        ["database shop is at migration V5, newer than the schema directory's V3"]
    );
    assert!(render::text(&plan).contains("warning: database shop is at migration V5"));

    let mut none = desired(vec![tenant("shop")]);
    none.schema_version = None;
    let plan = plan_fn(&none, &o);
    assert!(plan.is_empty(), "{plan:#?}");
    assert_eq!(
        plan.warnings,
        ["database shop is at migration V5, newer than the schema directory's (none)"]
    );
}

// ---------------------------------------------------------------- rendering

#[test]
fn json_rendering_has_summary_counts() {
    let mut o = converged_observed(&desired(vec![tenant("gone")]));
    o.databases.insert(
        "bad".to_owned(),
        ObservedDatabase {
            name: "bad".to_owned(),
            owner: "postgres".to_owned(),
            allow_connections: true,
            comment: None,
            acl: Acl::new(),
        },
    );
    let mut shop_o = converged_observed(&desired(vec![tenant("shop")]));
    shop_o.contents.get_mut("shop").unwrap().migration_version = Some(2);
    o.roles.append(&mut shop_o.roles);
    o.databases.append(&mut shop_o.databases);
    o.contents.append(&mut shop_o.contents);
    let want = desired(vec![tenant("new"), tenant("shop"), tenant("bad")]);
    let plan = plan(&want, &o);
    assert_eq!(plan.counts(), (12, 1, 9));

    let json: serde_json::Value = serde_json::from_str(&render::json(&plan)).expect("valid JSON");
    assert_eq!(json["fleet"], "prod");
    assert_eq!(
        json["summary"],
        serde_json::json!({"add": 12, "change": 1, "destroy": 9})
    );
    let tenants = json["tenants"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = tenants
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap(), t["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("gone", "destroy"), ("new", "create"), ("shop", "update")]
    );
    assert_eq!(
        tenants[2]["changes"],
        serde_json::json!([{"type": "migrate", "database": "shop", "from": 2, "to": 3}])
    );
    assert_eq!(tenants[1]["changes"][0]["type"], "create_role");
    assert_eq!(tenants[1]["changes"][0]["kind"], "owner");
    assert_eq!(json["conflicts"][0]["tenant"], "bad");
    assert_eq!(json["conflicts"][0]["object"], "database");
    assert_eq!(json["warnings"], serde_json::json!([]));
}

#[test]
fn postgres_14_public_schema_of_the_bootstrap_superuser_is_refused_for_a_non_superuser() {
    // PostgreSQL 14: a new database's `public` copies template1's, owned by
    // the bootstrap superuser, which an admin that is neither a superuser
    // nor has its privileges cannot hand to the tenant's owner.
    let want = desired(vec![tenant("shop"), tenant("cafe")]);
    let mut o = empty_observed();
    o.current_user = "tenantry".to_owned();
    o.current_user_is_superuser = false;
    o.server_version_num = 140023;
    o.new_public_owner = Some(PublicOwner {
        role: "postgres".to_owned(),
        admin_acts_as: false,
    });
    let p = plan(&want, &o);
    assert!(p.tenants.is_empty(), "{p:#?}");
    assert_eq!(p.conflicts.len(), 2, "{p:#?}");
    let text = render::text(&p);
    assert!(
        text.contains(
            "error: tenant shop: schema public of its new database would belong to \"postgres\" (PostgreSQL 14 copies it from template1)"
        ),
        "{text}"
    );
    // The remedy once, after the last tenant it resolves.
    assert_eq!(text.matches("help: once per server, as a superuser: psql -d template1 -c 'ALTER SCHEMA public OWNER TO pg_database_owner; REVOKE CREATE ON SCHEMA public FROM PUBLIC'").count(), 1, "{text}");
    assert!(
        text.ends_with("apply runs once the conflicts above are resolved.\n"),
        "{text}"
    );
    assert_eq!(
        p.check_runnable(false),
        Err(crate::plan::Refusal::Conflicts(2))
    );

    // template1 fixed as README says (what 15 does), or an admin that is a
    // member of the holder (it hands `public` over itself): plan as usual.
    for fixed in [
        PublicOwner {
            role: "pg_database_owner".to_owned(),
            admin_acts_as: false,
        },
        PublicOwner {
            role: "cloudsqlsuperuser".to_owned(),
            admin_acts_as: true,
        },
    ] {
        o.new_public_owner = Some(fixed);
        let p = plan(&want, &o);
        assert!(p.conflicts.is_empty(), "{p:#?}");
        assert_eq!(p.tenants.len(), 2);
    }
}

#[test]
fn a_public_schema_given_away_is_refused_for_a_non_superuser_and_repaired_by_a_superuser() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.contents.get_mut("shop").unwrap().schema_owner = "postgres".to_owned();
    let p = plan(&want, &o);
    assert!(p.conflicts.is_empty(), "{p:#?}");
    assert!(matches!(only_change(&p, "shop"), Change::Privileges { .. }));

    o.current_user_is_superuser = false;
    o.current_user = "tenantry".to_owned();
    let p = plan(&want, &o);
    assert!(p.tenants.is_empty(), "{p:#?}");
    let text = render::text(&p);
    assert!(
        text.contains("error: tenant shop: schema public belongs to \"postgres\", and admin \"tenantry\" is not a superuser")
            && text.contains("help: as a superuser: psql -d shop -c 'ALTER SCHEMA public OWNER TO \"shop_owner\"'"),
        "{text}"
    );
}

#[test]
fn postgres_16_a_grant_a_non_superuser_cannot_change_is_a_conflict() {
    // PostgreSQL 16 keeps one grant per grantor; the catalog reader says
    // which grantors the admin may act as.
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.current_user_is_superuser = false;
    o.server_version_num = 160014;
    let grant = |group: &str, grantor: &str, inherit, admin_acts_as_grantor| crate::model::Grant {
        group: group.to_owned(),
        grantor: grantor.to_owned(),
        inherit,
        admin_acts_as_grantor,
    };
    let bob = role_mut(&mut o, "shop_bob");
    bob.member_of.insert("cafe_admin".to_owned());
    bob.grants = vec![
        grant("cafe_admin", "postgres", true, false),
        grant("shop_developer", "tenantry", true, true),
    ];
    let gw = role_mut(&mut o, "shop_gateway");
    gw.inherit = true;
    gw.grants = vec![grant("shop_admin", "postgres", true, false)];
    let p = plan(&want, &o);
    assert!(p.tenants.is_empty(), "{p:#?}");
    let text = render::text(&p);
    assert!(
        text.contains("error: tenant shop: role shop_bob is a member of cafe_admin by a grant of \"postgres\", which admin \"tenantry\", not a superuser, cannot change (PostgreSQL 16 keeps a grant per grantor)")
            && text.contains("help: as \"postgres\" (or a role with its privileges) or a superuser: REVOKE \"cafe_admin\" FROM \"shop_bob\" GRANTED BY \"postgres\"")
            && text.contains("error: tenant shop: role shop_gateway inherits the privileges of shop_admin by a grant of \"postgres\"")
            && text.contains("help: as \"postgres\" (or a role with its privileges) or a superuser: REVOKE INHERIT OPTION FOR \"shop_admin\" FROM \"shop_gateway\" GRANTED BY \"postgres\""),
        "{text}"
    );

    // Grants the admin may act for are changed as usual.
    for role in ["shop_bob", "shop_gateway"] {
        for g in &mut role_mut(&mut o, role).grants {
            g.admin_acts_as_grantor = true;
        }
    }
    let p = plan(&want, &o);
    assert!(p.conflicts.is_empty(), "{p:#?}");
    assert!(tenant_plan(&p, "shop")
        .changes
        .iter()
        .any(|c| matches!(c, Change::UpdateUser { revoke, .. } if revoke == &["cafe_admin"])));
}

#[test]
fn a_user_that_does_not_inherit_is_drift() {
    // Before 16 inheriting is the role's attribute.
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    role_mut(&mut o, "shop_bob").inherit = false;
    let p = plan(&want, &o);
    match only_change(&p, "shop") {
        Change::UpdateUser { user, diffs, .. } => {
            assert_eq!(user, "shop_bob");
            assert_eq!(diffs, &[d("inherit", "false", "true")]);
        }
        c => panic!("{c:#?}"),
    }
}

#[test]
fn postgres_16_a_user_in_its_group_only_without_inherit_is_drift() {
    let want = desired(vec![tenant("shop")]);
    let mut o = converged_observed(&want);
    o.server_version_num = 170010;
    role_mut(&mut o, "shop_bob").grants = vec![crate::model::Grant {
        group: "shop_developer".to_owned(),
        grantor: "postgres".to_owned(),
        inherit: false,
        admin_acts_as_grantor: true,
    }];
    let p = plan(&want, &o);
    match only_change(&p, "shop") {
        Change::UpdateUser { user, diffs, .. } => {
            assert_eq!(user, "shop_bob");
            assert_eq!(diffs, &[d("inherits shop_developer", "no", "yes")]);
        }
        c => panic!("{c:#?}"),
    }
}

#[test]
fn the_usage_and_audit_tables_are_created_and_kept_to_their_grants() {
    let want = desired(vec![tenant("shop")]);
    // A store made before the trail: both tables missing, nothing else.
    let mut o = converged_observed(&want);
    let store = &mut o.contents.get_mut("shop").unwrap().token_store;
    store.usage = None;
    store.audit = None;
    let missing = plan(&want, &o);
    let (diffs, foreign, reown) = token_store_change(&missing);
    assert_eq!(
        diffs,
        [
            d("usage: table tenantry.usage", "(missing)", "present"),
            d("audit trail: table tenantry.audit", "(missing)", "present"),
        ]
    );
    assert!(foreign.is_empty() && !reown);

    // A tenant group given more than reading the trail, another role
    // anything, the gateway's append taken away: drift, and revoked.
    let mut o = converged_observed(&want);
    let store = &mut o.contents.get_mut("shop").unwrap().token_store;
    let audit = store.audit.as_mut().unwrap();
    audit
        .acl
        .insert("shop_developer".to_owned(), privs(&["UPDATE", "DELETE"]));
    audit.acl.insert("mallory".to_owned(), privs(&["SELECT"]));
    audit.acl.remove("shop_gateway");
    let widened = plan(&want, &o);
    let (diffs, foreign, _) = token_store_change(&widened);
    let what = "audit trail: table tenantry.audit";
    assert!(
        diffs.contains(&d(
            &format!("{what}: shop_developer"),
            "UPDATE, DELETE",
            "(none)"
        )),
        "{diffs:?}"
    );
    assert!(
        diffs.contains(&d(&format!("{what}: shop_gateway"), "(none)", "INSERT")),
        "{diffs:?}"
    );
    assert!(
        diffs.contains(&d(&format!("{what}: mallory"), "SELECT", "(none)")),
        "{diffs:?}"
    );
    assert_eq!(foreign, ["mallory"]);
    // The converged store is no change at all.
    let o = converged_observed(&want);
    assert!(plan(&want, &o).tenants.is_empty());
}
