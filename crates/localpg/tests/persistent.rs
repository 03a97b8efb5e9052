//! The persistent embedded cluster of `tenantry up`/`down`: data survives a
//! stop and start, the port is reused, and stopping twice is harmless.

use tenantry_localpg::Cluster;

#[test]
fn data_survives_stop_and_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".tenantry").join("pg");

    assert!(
        !Cluster::stop_persistent(&dir).unwrap(),
        "nothing to stop yet"
    );

    let first = Cluster::start_persistent(&dir).unwrap();
    let port = first.port();
    first
        .psql(
            "postgres",
            "create table kept (v text); insert into kept values ('still here');",
        )
        .unwrap();
    let max = first.psql("postgres", "show max_connections").unwrap();
    assert_eq!(max.trim(), "200");
    drop(first);

    // Dropping the handle leaves it running: starting again just attaches.
    let attached = Cluster::start_persistent(&dir).unwrap();
    assert_eq!(attached.port(), port);
    assert_eq!(attached.psql("postgres", "select 1").unwrap().trim(), "1");

    assert!(Cluster::stop_persistent(&dir).unwrap());
    assert!(!Cluster::stop_persistent(&dir).unwrap(), "already stopped");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    let second = Cluster::start_persistent(&dir).unwrap();
    assert_eq!(second.port(), port, "the recorded port is reused when free");
    let kept = second.psql("postgres", "select v from kept").unwrap();
    assert_eq!(kept.trim(), "still here");
    assert!(Cluster::stop_persistent(&dir).unwrap());
}

#[test]
fn deep_private_directories_still_work() {
    // tempdir() is mode 0700: as root, the `postgres` user must be let
    // through; the path is also too long for a Unix socket inside it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp
        .path()
        .join("a-rather-long-project-directory-name-for-testing")
        .join("another-long-component")
        .join(".tenantry/pg");
    let cluster = Cluster::start_persistent(&dir).unwrap();
    let socket = cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()));
    assert!(socket.as_os_str().len() < 100, "{}", socket.display());
    assert_eq!(cluster.psql("postgres", "select 1").unwrap().trim(), "1");
    assert!(Cluster::stop_persistent(&dir).unwrap());
}

#[test]
fn a_failed_start_shows_the_server_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pg");
    let cluster = Cluster::start_persistent(&dir).unwrap();
    let conf = cluster.data_dir().join("postgresql.conf");
    drop(cluster);
    assert!(Cluster::stop_persistent(&dir).unwrap());
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nshared_buffers = 'lots'\n");
    std::fs::write(&conf, text).unwrap();

    let err = Cluster::start_persistent(&dir).unwrap_err().to_string();
    assert!(err.contains("did not start"), "{err}");
    assert!(err.contains("shared_buffers"), "log tail missing: {err}");
}
