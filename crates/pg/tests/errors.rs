//! `tenantry_pg::Error` keeps the server's SQLSTATE, so callers branch on
//! codes instead of message text (which `lc_messages` translates).

use secrecy::SecretString;
use tenantry_localpg::Cluster;
use tenantry_pg::error::SqlState;
use tenantry_pg::{Admin, Error};

#[tokio::test]
async fn a_refused_login_and_a_missing_database_carry_their_sqlstate() {
    let cluster = Cluster::shared();
    let name = format!("errs{}", std::process::id());
    let url = cluster.create_admin_role(&name, "right-pw").unwrap();
    let wrong = SecretString::from(url.replace("right-pw", "wrong-pw"));
    let e = Admin::from_url(Some(&wrong))
        .unwrap()
        .connect(None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PASSWORD), "{e}");

    let right = SecretString::from(url);
    let e = Admin::from_url(Some(&right))
        .unwrap()
        .connect(Some("no_such_database_here"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_CATALOG_NAME), "{e}");

    // Nobody listening: no SQLSTATE.
    let closed = SecretString::from("postgres://postgres@127.0.0.1:1/postgres".to_owned());
    let e = Admin::from_url(Some(&closed))
        .unwrap()
        .connect(None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), None, "{e}");
}
