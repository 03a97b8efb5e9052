//! A running gateway for the end-to-end tests: `tenantry serve` on free
//! ports (its log kept), a minimal HTTP/1.1 client, and API tokens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Fleet;

/// A running `tenantry serve` whose log lines are kept; stopped on drop.
pub struct Gateway {
    child: Child,
    /// `host:port` of the API and of the admin listener.
    pub api: String,
    pub admin: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Serves `f`'s inventory (or, with `DATABASE_DSN` in `env` and no
    /// file, one database) on free loopback ports, reloading every 200 ms.
    pub fn start(f: &Fleet, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        Gateway::spawn(Gateway::command(f, extra, env))
    }

    /// [`start`](Self::start) for a file naming its servers (no
    /// `TENANTRY_ADMIN_URL`: it is refused for a file with several).
    pub fn start_fleet(f: &Fleet, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Gateway::command(f, extra, env);
        cmd.env_remove("TENANTRY_ADMIN_URL");
        Gateway::spawn(cmd)
    }

    /// `tenantry serve` on free loopback ports, reloading every 200 ms.
    fn command(f: &Fleet, extra: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--reload-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let mut cmd = f.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(mut cmd: std::process::Command) -> Gateway {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // "Gateway serving ... on http://127.0.0.1:PORT (admin: http://127.0.0.1:PORT); ..."
        let addr = |after: &str| {
            let rest = &line[line
                .find(after)
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                + after.len()..];
            rest.split([' ', ')', ';']).next().unwrap().to_owned()
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        // Stdout stays read too (its last line comes at exit).
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in stdout.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Gateway {
            api: if line.contains(" on https://") {
                addr(" on https://")
            } else {
                addr(" on http://")
            },
            admin: addr("(admin: http://"),
            child,
            log,
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM", "HUP") to the gateway.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many log lines contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (up to 60 s) until more than `before` log lines contain `needle`.
    pub fn wait_for_log(&self, needle: &str, before: usize) {
        for _ in 0..1200 {
            if self.logged(needle) > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the gateway never logged {needle:?}; its log:\n{}",
            self.log()
        );
    }

    /// Waits up to `limit` for the process to exit; its exit status, or None.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// How many times the gateway reloaded its configuration (log lines).
    pub fn reloads(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    }

    /// Waits (up to 30 s) until more than `before` reloads happened.
    pub fn wait_for_reload(&self, before: usize) {
        for _ in 0..600 {
            if self.reloads() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the gateway never reloaded; its log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
    }

    /// `GET /api/widgets` as `token` on `host`.
    pub fn get(&self, host: &str, token: &str) -> (u16, String) {
        http(&self.api, "GET", host, "/api/widgets", Some(token), None)
    }

    /// Open connections of a (tenant, role) pool, from /metrics.
    pub fn open(&self, tenant: &str, role: &str) -> usize {
        let (_, metrics) = http(&self.admin, "GET", "localhost", "/metrics", None, None);
        let prefix = format!(
            "tenantry_pool_connections{{server=\"default\",tenant=\"{tenant}\",role=\"{role}\",state=\"open\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A minimal HTTP/1.1 client: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A new API token of `tenant` (`{p}` allowed) for `role`.
pub fn token(f: &Fleet, tenant: &str, role: &str) -> String {
    f.tenantry(&["token", "create", &f.name(tenant), "--role", role])
        .ok()
        .trim()
        .to_owned()
}

/// [`token`] for a file naming its servers.
pub fn fleet_token(f: &Fleet, tenant: &str, role: &str) -> String {
    f.tenantry_fleet(&["token", "create", &f.name(tenant), "--role", role])
        .ok()
        .trim()
        .to_owned()
}

/// [`http`], with the response's header lines (`name: value`, names in
/// lowercase): (status, headers, body).
pub fn http_with_headers(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}: {}", name.to_ascii_lowercase(), value.trim()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (status, headers, body.to_owned())
}
