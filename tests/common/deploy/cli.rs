//! Command lines in deploy/: which run tenantry, their flags, whether the
//! real parser accepts them, and the ports and hosts they name.

use std::path::Path;
use std::process::Command;

use super::*;

/// Whether `argv` runs the tenantry binary.
pub fn is_tenantry(argv: &[String]) -> bool {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "tenantry")
}

/// The tenantry subcommand of `argv` (`serve`, `apply`, ...).
pub fn subcommand(argv: &[String]) -> Option<&str> {
    argv.get(1).map(String::as_str)
}

/// The value of `--name value` or `--name=value`.
pub fn flag(argv: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    argv.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

/// Runs the real argument parser on `argv` with `--help` appended: clap
/// rejects an unknown subcommand, flag or value before it gets to `--help`.
pub fn cli_accepts(argv: &[String]) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(&argv[1..])
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {BIN}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `host:port` of a `--listen`/`--admin-listen` value.
pub fn socket(value: &str) -> Result<std::net::SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("{value:?} is not an address: {e}"))
}

/// Port and path of the first `http://host:port/path` in `words`.
pub fn http_target(words: &[String]) -> Option<(u16, String)> {
    let w = words.iter().find_map(|w| {
        w.find("http://")
            .map(|i| w[i + "http://".len()..].to_owned())
    })?;
    let (authority, path) = match w.find('/') {
        Some(i) => (&w[..i], w[i..].to_owned()),
        None => (w.as_str(), "/".to_owned()),
    };
    let port = authority.rsplit_once(':')?.1.parse().ok()?;
    Some((port, path))
}

/// The host of a `postgres://user:pw@host:port/db` URL.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find([':', '/', '?']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The listen and admin ports of a `tenantry serve` command line, checked:
/// both given, both on an address reachable from outside the container.
pub fn serve_ports(
    argv: &[String],
    origin: &str,
    problems: &mut Vec<String>,
) -> Option<(u16, u16)> {
    let mut get = |name: &str| -> Option<u16> {
        let Some(value) = flag(argv, name) else {
            problems.push(format!(
                "{origin}: `tenantry serve` without {name} (its default is for a laptop; say it in a container)"
            ));
            return None;
        };
        match socket(&value) {
            Ok(addr) if addr.ip().is_loopback() => {
                problems.push(format!(
                    "{origin}: {name} {value} is loopback: nothing outside the container (published ports, probes) reaches it; use 0.0.0.0"
                ));
                None
            }
            Ok(addr) => Some(addr.port()),
            Err(e) => {
                problems.push(format!("{origin}: {name}: {e}"));
                None
            }
        }
    };
    let listen = get("--listen");
    let admin = get("--admin-listen");
    Some((listen?, admin?))
}
