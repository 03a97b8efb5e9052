//! Pure text: the `pg_hba.conf` and settings file we write into a cluster.
//! No I/O here. (SQL quoting is `tenantry-layout`'s, URLs
//! `tenantry-pgconn`'s.)

use std::fmt::Write as _;
use std::path::Path;

/// Who gets in how: the `postgres` superuser is trusted on the local socket
/// and on loopback TCP (tests and the harness connect as it without a
/// password); every other user must pass SCRAM-SHA-256.
pub(crate) const PG_HBA: &str = "\
# Written by tenantry-localpg.
# TYPE  DATABASE     USER      ADDRESS        METHOD
local   all          postgres                 trust
host    all          postgres  127.0.0.1/32   trust
host    all          postgres  ::1/128        trust
local   replication  postgres                 trust
host    replication  postgres  127.0.0.1/32   trust
local   all          all                      scram-sha-256
host    all          all       127.0.0.1/32   scram-sha-256
host    all          all       ::1/128        scram-sha-256
";

/// The settings file name inside the data directory; `postgresql.conf`
/// includes it, and it is rewritten on every start.
pub(crate) const SETTINGS_FILE: &str = "tenantry.conf";

/// The line appended to `postgresql.conf` after `initdb`.
pub(crate) const INCLUDE_LINE: &str =
    "\n# Added by tenantry-localpg: port, socket and tuning.\ninclude_if_exists = 'tenantry.conf'\n";

/// Throwaway (tests, benches: fast, unsafe on crash) or persistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    Throwaway,
    Persistent,
}

/// A server setting a caller asked for, on top of the profile's: a name
/// (checked by [`Setting::new`]) and a value, written quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    name: String,
    value: String,
}

impl Setting {
    /// `None` unless `name` looks like a setting name (so nothing but one
    /// `name = 'value'` line can come of it).
    pub(crate) fn new(name: &str, value: &str) -> Option<Setting> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        valid.then(|| Setting {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// The contents of [`SETTINGS_FILE`]: the profile's settings, then `extra`
/// (later lines win, so `extra` overrides the profile).
pub(crate) fn settings(
    profile: Profile,
    port: u16,
    socket_dir: &Path,
    extra: &[Setting],
) -> String {
    let mut s = String::from("# Written by tenantry-localpg on every start; edits are lost.\n");
    let _ = writeln!(s, "listen_addresses = '127.0.0.1'");
    let _ = writeln!(s, "port = {port}");
    let _ = writeln!(
        s,
        "unix_socket_directories = {}",
        conf_string(&socket_dir.to_string_lossy())
    );
    let _ = writeln!(s, "password_encryption = 'scram-sha-256'");
    match profile {
        Profile::Throwaway => s.push_str(
            "max_connections = 300\n\
             shared_buffers = '128MB'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
        ),
        Profile::Persistent => s.push_str("max_connections = 200\n"),
    }
    for Setting { name, value } in extra {
        let _ = writeln!(s, "{name} = {}", conf_string(value));
    }
    s
}

/// A quoted postgresql.conf string value.
fn conf_string(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_strings_double_the_quote_character() {
        assert_eq!(conf_string("/x/'y"), "'/x/''y'");
    }

    #[test]
    fn throwaway_settings_trade_durability_for_speed() {
        let s = settings(Profile::Throwaway, 5433, Path::new("/tmp/x/s"), &[]);
        for line in [
            "port = 5433",
            "fsync = off",
            "max_connections = 300",
            "full_page_writes = off",
        ] {
            assert!(s.contains(line), "{line} missing from:\n{s}");
        }
        let p = settings(Profile::Persistent, 5433, Path::new("/tmp/x/s"), &[]);
        assert!(p.contains("max_connections = 200") && !p.contains("fsync"));
    }

    #[test]
    fn extra_settings_come_last_and_quoted() {
        let extra = [
            Setting::new("max_connections", "8").unwrap(),
            Setting::new("log_line_prefix", "it's %p ").unwrap(),
        ];
        let s = settings(Profile::Throwaway, 5433, Path::new("/tmp/x/s"), &extra);
        assert!(
            s.ends_with("max_connections = '8'\nlog_line_prefix = 'it''s %p '\n"),
            "{s}"
        );
        assert!(s.find("max_connections = 300") < s.find("max_connections = '8'"));
        for bad in ["", "a = 1\nfsync", "x y", "a;b"] {
            assert_eq!(Setting::new(bad, "1"), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_superuser_is_trusted() {
        for line in PG_HBA.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.last() == Some(&"trust") {
                assert_eq!(fields[2], "postgres", "{line}");
            } else {
                assert_eq!(fields.last(), Some(&"scram-sha-256"), "{line}");
            }
        }
    }
}
