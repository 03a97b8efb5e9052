//! Finding the PostgreSQL server binaries: `TENANTRY_PG_BIN`, else the
//! major `TENANTRY_PG_VERSION` names (Debian's, or one `scripts/fetch-postgres`
//! brought into its cache), else the highest version under Debian's
//! `/usr/lib/postgresql/<ver>/bin`, else `pg_config --bindir`; and the
//! client programs (`psql`, `pg_dump`,
//! `pg_restore`): `TENANTRY_PG_BIN`'s when it has them, else the newest
//! installed client's. A server-only `TENANTRY_PG_BIN` (the binaries
//! `scripts/fetch-postgres` brings for each major) thus runs with the
//! installed client.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;

/// Where Debian installs one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding `initdb`, `pg_ctl`, `postgres`, `psql`, `pg_dump`
/// and `pg_restore` of one PostgreSQL version.
///
/// Looks at, in order: the `TENANTRY_PG_BIN` environment variable (used as
/// is, an error if it lacks the programs), the highest version under
/// `/usr/lib/postgresql/*/bin`, and `pg_config --bindir`.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("TENANTRY_PG_BIN") {
        let dir = PathBuf::from(dir);
        if is_bin_dir(&dir) {
            return Ok(dir);
        }
        return Err(Error::NotInstalled {
            searched: format!(
                "TENANTRY_PG_BIN={} (no initdb and pg_ctl there)",
                dir.display()
            ),
        });
    }
    if let Some(major) = std::env::var_os("TENANTRY_PG_VERSION") {
        let major = major.to_string_lossy();
        return match major.trim().parse() {
            Ok(major) => bin_dir_of_major(major),
            Err(_) => Err(Error::NotInstalled {
                searched: format!(
                    "TENANTRY_PG_VERSION={major:?} is not a major version number such as 17"
                ),
            }),
        };
    }
    searched.push(format!("{DEBIAN_ROOT}/*/bin"));
    if let Some(dir) = debian_versions().into_iter().next().map(|(_, d)| d) {
        return Ok(dir);
    }
    searched.push("pg_config --bindir".to_owned());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_bin_dir(&dir) {
                return Ok(dir);
            }
        }
    }
    Err(Error::NotInstalled {
        searched: searched.join(", "),
    })
}

/// The server programs of PostgreSQL `major`: Debian's
/// `/usr/lib/postgresql/<major>/bin`, else the newest `<major>.*` that
/// `scripts/fetch-postgres` left in one of its caches
/// ([`fetch_caches`]), else an error naming where it looked and the command
/// that fetches it.
pub fn bin_dir_of_major(major: u32) -> Result<PathBuf, Error> {
    if let Some((_, dir)) = debian_versions()
        .into_iter()
        .find(|(v, _)| v.first() == Some(&major))
    {
        return Ok(dir);
    }
    let caches = fetch_caches();
    if let Some(dir) = newest_fetched(&caches, major) {
        return Ok(dir);
    }
    let looked: Vec<String> = caches
        .iter()
        .map(|c| format!("{}/{major}.*/native/bin", c.display()))
        .collect();
    Err(Error::NotInstalled {
        searched: format!(
            "{DEBIAN_ROOT}/{major}/bin, {}; `scripts/fetch-postgres {major}` fetches it",
            looked.join(", ")
        ),
    })
}

/// The newest `<major>.*/native/bin` with server programs in `caches`.
fn newest_fetched(caches: &[PathBuf], major: u32) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = caches
        .iter()
        .flat_map(|cache| std::fs::read_dir(cache).into_iter().flatten().flatten())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path().join("native").join("bin");
            let key = version_key(&name);
            (key.first() == Some(&major) && is_bin_dir(&dir)).then_some((key, dir))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().next().map(|(_, dir)| dir)
}

/// Where `scripts/fetch-postgres` may have put servers: `$TENANTRY_PG_CACHE`,
/// `/var/cache/tenantry/postgres` (its choice as root) and
/// `${XDG_CACHE_HOME:-$HOME/.cache}/tenantry/postgres`.
fn fetch_caches() -> Vec<PathBuf> {
    let mut caches = Vec::new();
    if let Some(dir) = std::env::var_os("TENANTRY_PG_CACHE") {
        caches.push(PathBuf::from(dir));
    }
    caches.push(PathBuf::from("/var/cache/tenantry/postgres"));
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(dir) = xdg {
        caches.push(dir.join("tenantry").join("postgres"));
    }
    caches
}

/// The bin directory of major version `major` (as written in a data
/// directory's `PG_VERSION`), Debian's or fetched ([`bin_dir_of_major`]),
/// unless `TENANTRY_PG_BIN` pins a directory.
pub(crate) fn bin_dir_for_version(major: &str) -> Option<PathBuf> {
    if std::env::var_os("TENANTRY_PG_BIN").is_some() {
        return None;
    }
    bin_dir_of_major(major.trim().parse().ok()?).ok()
}

/// Where the client programs are: `TENANTRY_PG_BIN` when it has `psql`,
/// else the highest Debian version that has it (a newer pg_dump dumps an
/// older server, never the reverse), else `pg_config --bindir`.
pub fn find_client_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("TENANTRY_PG_BIN").map(PathBuf::from) {
        if is_client_dir(&dir) {
            return Ok(dir);
        }
    }
    let found = debian_dirs(is_client_dir);
    if let Some((_, dir)) = found.into_iter().next() {
        return Ok(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && is_client_dir(&dir) {
            return Ok(dir);
        }
    }
    Err(Error::NotInstalled {
        searched: format!("psql in TENANTRY_PG_BIN, {DEBIAN_ROOT}/*/bin, pg_config --bindir"),
    })
}

/// A client program (`pg_dump`, `pg_restore`, `psql`) by path: in
/// [`find_client_dir`], else its bare name (looked up on PATH when run).
pub fn client_tool(name: &str) -> PathBuf {
    find_client_dir()
        .map(|d| d.join(name))
        .unwrap_or_else(|_| PathBuf::from(name))
}

fn is_client_dir(dir: &Path) -> bool {
    dir.join("psql").is_file()
}

/// Installed Debian versions, highest first.
fn debian_versions() -> Vec<(Vec<u32>, PathBuf)> {
    debian_dirs(is_bin_dir)
}

/// Debian's `/usr/lib/postgresql/<ver>/bin` directories that pass `keep`,
/// with their versions, highest first.
fn debian_dirs(keep: fn(&Path) -> bool) -> Vec<(Vec<u32>, PathBuf)> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path().join("bin");
            keep(&dir).then(|| (version_key(&name), dir))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found
}

/// "9.6" -> [9, 6], "15" -> [15]; non-numbers sort lowest.
fn version_key(v: &str) -> Vec<u32> {
    v.trim()
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

fn is_bin_dir(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = [version_key("9.6"), version_key("15"), version_key("10")];
        v.sort();
        assert_eq!(v, [vec![9, 6], vec![10], vec![15]]);
    }

    #[test]
    fn the_newest_fetched_release_of_a_major_is_used() {
        let root = std::env::temp_dir().join(format!("localpg-fetched-{}", std::process::id()));
        let cache = root.join("cache");
        for release in [
            "17.2.0-beta.1",
            "17.10.0-beta.17",
            "16.14.0-beta.17",
            "17.11.0",
        ] {
            let bin = cache.join(release).join("native").join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            // 17.11.0 is an interrupted fetch: no programs.
            if release != "17.11.0" {
                for program in ["initdb", "pg_ctl"] {
                    std::fs::write(bin.join(program), "").unwrap();
                }
            }
        }
        let caches = [root.join("missing"), cache.clone()];
        assert_eq!(
            newest_fetched(&caches, 17),
            Some(cache.join("17.10.0-beta.17/native/bin"))
        );
        assert_eq!(
            newest_fetched(&caches, 16),
            Some(cache.join("16.14.0-beta.17/native/bin"))
        );
        assert_eq!(newest_fetched(&caches, 14), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn finds_binaries_on_this_machine() {
        let dir = find_bin_dir().expect("PostgreSQL must be installed to run these tests");
        assert!(dir.join("pg_ctl").is_file());
    }
}
