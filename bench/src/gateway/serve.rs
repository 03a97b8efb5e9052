//! The side under test: `tenantry serve` as a child process (its first
//! line, /metrics, CPU and memory), PostgreSQL's share of the work, the
//! measured gateway runs and the idle-memory run. The baseline server is in
//! `baseline`, the load driver in `wrk`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tenantry_localpg::Cluster;

use crate::tail;

use super::*;

/// A one-shot HTTP/1.1 GET: (status, body).
pub(super) fn http_get(
    addr: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let sock: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        let _ = write!(req, "Authorization: Bearer {t}\r\n");
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Fails unless the widget comes back (200, id 1) for each of `targets`.
pub(super) fn check_widget(addr: &str, targets: &[&Target]) -> Result<()> {
    for t in targets {
        let (status, body) = http_get(
            addr,
            &format!("/api/widgets/{WIDGET_ID}"),
            &t.host,
            Some(&t.token),
        )?;
        if status != 200 || !body.contains(&format!("\"id\":{WIDGET_ID}")) {
            bail!(
                "GET /api/widgets/{WIDGET_ID} for {} answered {status}: {body}",
                t.host
            );
        }
    }
    Ok(())
}

/// A sample without labels from a Prometheus text page.
pub(super) fn metric(text: &str, name: &str) -> Option<f64> {
    // Summed over its samples: the gateway labels these by server.
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            rest.trim().parse::<f64>().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `tenantry_requests_total` summed over samples whose status is not 2xx.
pub(super) fn non_2xx_from_metrics(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("tenantry_requests_total{") && !l.contains("status=\"2"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------- tenantry serve

/// A running `tenantry serve`; stopped (SIGTERM, then kill) on drop.
pub(crate) struct Served {
    pub(super) child: Child,
    pub(crate) api: String,
    pub(crate) admin: String,
    pub(super) started_after: Duration,
}

impl Served {
    pub(crate) fn start(
        bin: &Path,
        config: &Path,
        admin_url: Option<&str>,
        workdir: &Path,
        budget: usize,
    ) -> Result<Served> {
        Served::start_with(bin, config, admin_url, workdir, budget, &[])
    }

    /// [`Served::start`] with more flags of `tenantry serve`.
    pub(crate) fn start_with(
        bin: &Path,
        config: &Path,
        admin_url: Option<&str>,
        workdir: &Path,
        budget: usize,
        extra: &[&str],
    ) -> Result<Served> {
        let log = workdir.join(format!(
            "serve-{}.log",
            config.file_stem().unwrap_or_default().to_string_lossy()
        ));
        let start = Instant::now();
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(config);
        match admin_url {
            Some(url) => cmd.args(["--admin-url", url]),
            // A file naming its servers: their URLs are in it.
            None => cmd.env_remove("TENANTRY_ADMIN_URL"),
        };
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--max-connections", &budget.to_string()])
            .args(extra)
            .env_remove("TENANTRY_LOG")
            .env_remove("DATABASE_DSN")
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot run tenantry serve")?;
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut first = String::new();
        let read = out.read_line(&mut first);
        let started_after = start.elapsed();
        // Keep draining stdout so the gateway never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        let mut served = Served {
            child,
            api: String::new(),
            admin: String::new(),
            started_after,
        };
        let addrs = read.ok().and_then(|_| parse_first_line(&first));
        match addrs {
            Some((api, admin)) => {
                served.api = api;
                served.admin = admin;
                Ok(served)
            }
            None => {
                drop(served);
                bail!(
                    "tenantry serve did not start; first line {first:?}; log:\n{}",
                    tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20)
                )
            }
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(&self.admin, "/metrics", "localhost", None)?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// SIGTERM and wait (the gateway drains in-flight requests first).
    pub(super) fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    pub(super) fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("tenantry serve did not stop within 40 s of SIGTERM; killed")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// "Gateway serving ... on http://A (admin: http://B); ..." -> (A, B).
pub(super) fn parse_first_line(line: &str) -> Option<(String, String)> {
    if !line.starts_with("Gateway serving ") {
        return None;
    }
    let api = line.split(" on http://").nth(1)?.split(' ').next()?;
    let admin = line.split("(admin: http://").nth(1)?.split(')').next()?;
    Some((api.to_owned(), admin.to_owned()))
}

/// (VmRSS, VmHWM) of `pid` in MiB.
pub(super) fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<f64> {
        let l = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Ok((
        field("VmRSS:").context("no VmRSS")?,
        field("VmHWM:").context("no VmHWM")?,
    ))
}

/// User + system CPU time of a whole process (all its threads), from
/// /proc/<pid>/stat (in USER_HZ = 100 ticks per second).
pub(super) fn cpu_time(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the command: state (not a number, dropped), then fields 4..;
    // utime and stime are fields 14 and 15, i.e. indexes 10 and 11 here.
    let ticks = f.get(10).context("no utime")? + f.get(11).context("no stime")?;
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU time of the cluster's server processes: the postmaster (with its
/// reaped children) and its live children.
pub(super) fn pg_cpu(cluster: &Cluster) -> Result<Duration> {
    let pidfile = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid"))?;
    let postmaster = pidfile
        .lines()
        .next()
        .context("empty postmaster.pid")?
        .trim();
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        let pid = name.to_string_lossy();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        // state, ppid, ...: ppid is index 1; utime..cstime are 11..=14.
        if pid != postmaster && f.get(1) != Some(&postmaster) {
            continue;
        }
        let ticks: u64 = f
            .get(11..=14)
            .unwrap_or_default()
            .iter()
            .filter_map(|x| x.parse::<u64>().ok())
            .sum();
        total += Duration::from_millis(ticks * 10);
    }
    Ok(total)
}

/// Transactions committed or rolled back in the whole cluster so far.
pub(super) fn pg_xacts(cluster: &Cluster) -> Result<u64> {
    let out = cluster.psql(
        "postgres",
        "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database",
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("bad transaction count {out:?}"))
}

/// PostgreSQL's side of a measured run: its CPU and transactions.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PgSide {
    pub(super) cpu: Duration,
    pub(super) xacts: u64,
}

impl PgSide {
    /// Before a run: let idle backends flush their statistics first.
    /// Summed over `clusters`.
    pub(super) fn before(clusters: &[&Cluster]) -> PgSide {
        std::thread::sleep(Duration::from_millis(1500));
        PgSide {
            cpu: clusters.iter().map(|c| pg_cpu(c).unwrap_or_default()).sum(),
            xacts: clusters
                .iter()
                .map(|c| pg_xacts(c).unwrap_or_default())
                .sum(),
        }
    }

    /// After a run: what happened since `start` (CPU read at once).
    pub(super) fn since(clusters: &[&Cluster], start: PgSide) -> PgSide {
        let cpu: Duration = clusters.iter().map(|c| pg_cpu(c).unwrap_or_default()).sum();
        std::thread::sleep(Duration::from_millis(1500));
        let xacts: u64 = clusters
            .iter()
            .map(|c| pg_xacts(c).unwrap_or_default())
            .sum();
        PgSide {
            cpu: cpu.saturating_sub(start.cpu),
            xacts: xacts.saturating_sub(start.xacts),
        }
    }

    pub(super) fn cpu_us_per(&self, requests: u64) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
    }

    pub(super) fn xacts_per(&self, requests: u64) -> f64 {
        self.xacts as f64 / requests.max(1) as f64
    }
}

/// Polls /metrics every 100 ms until dropped; keeps the highest
/// `tenantry_connections_open`.
pub(super) struct Poller {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handle: Option<std::thread::JoinHandle<f64>>,
}

impl Poller {
    pub(super) fn start(admin: &str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let admin = admin.to_owned();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0f64;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((200, body)) = http_get(&admin, "/metrics", "localhost", None) {
                    if let Some(v) = metric(&body, "tenantry_connections_open") {
                        max = max.max(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        });
        Poller {
            stop,
            handle: Some(handle),
        }
    }

    pub(super) fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or(0.0)
    }
}

/// What one gateway run measured.
pub(crate) struct GatewayRun {
    pub(super) wrk: Wrk,
    pub(super) cpu: Duration,
    pub(super) max_open: f64,
    pub(super) evictions: f64,
    /// Connections dialed during warm-up and run (each a backend and a login).
    pub(super) opened: f64,
    pub(super) hwm_mib: f64,
    /// Token lookups that reached the database during the measured run.
    pub(super) token_lookups: Option<u64>,
    pub(super) pg: PgSide,
}

impl GatewayRun {
    pub(super) fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.wrk.requests.max(1) as f64)
    }

    /// Requests a second of the measured run.
    pub(crate) fn rps(&self) -> f64 {
        self.wrk.rps()
    }

    /// Answers that were not 2xx, and socket errors.
    pub(crate) fn errors(&self) -> u64 {
        self.wrk.non_2xx + self.wrk.socket_errors()
    }

    pub(crate) fn line(&self) -> String {
        let mut s = self.wrk.line();
        let _ = write!(
            s,
            "; gateway CPU {:.0} µs/request, PostgreSQL CPU {:.0} µs and {:.2} transactions/request, max open connections {:.0}, evictions {:.0}, connections opened {:.0}, VmHWM {:.1} MiB",
            self.cpu_us_per_request(),
            self.pg.cpu_us_per(self.wrk.requests),
            self.pg.xacts_per(self.wrk.requests),
            self.max_open,
            self.evictions,
            self.opened,
            self.hwm_mib
        );
        if let Some(t) = self.token_lookups {
            let _ = write!(s, ", token lookups in the database {t}");
        }
        s
    }
}

/// Starts the gateway, checks the first and last tenant, warms up,
/// measures, reads /metrics, stops it. With `stats`, also counts the token
/// lookups that reached the databases during the measured run.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gateway_run(
    bin: &Path,
    config: &Path,
    admin_url: Option<&str>,
    workdir: &Path,
    budget: usize,
    targets: &[Target],
    script: &Path,
    load: &Load<'_>,
    clusters: &[&Cluster],
    token_dbs: Option<&[String]>,
) -> Result<GatewayRun> {
    let cluster = clusters[0];
    let served = Served::start(bin, config, admin_url, workdir, budget)?;
    let ends = [&targets[0], &targets[targets.len() - 1]];
    check_widget(&served.api, &ends)?;
    let poller = Poller::start(&served.admin);
    let pid = served.pid().to_string();
    let mut before = None;
    let mut cpu_before = Duration::ZERO;
    let mut pg_before = PgSide::default();
    let wrk = load.measure(&served.api, script, || {
        pg_before = PgSide::before(clusters);
        before = token_dbs.and_then(|dbs| token_scans(cluster, dbs).ok());
        cpu_before = cpu_time(&pid).unwrap_or_default();
    })?;
    let cpu = cpu_time(&pid)?.saturating_sub(cpu_before);
    let pg = PgSide::since(clusters, pg_before);
    let max_open = poller.finish();
    let text = served.metrics()?;
    let evictions = metric(&text, "tenantry_pool_evictions_total").unwrap_or(0.0);
    let opened = metric(&text, "tenantry_connections_opened_total").unwrap_or(0.0);
    let max_open = max_open.max(metric(&text, "tenantry_connections_open").unwrap_or(0.0));
    let from_metrics = non_2xx_from_metrics(&text);
    if from_metrics > 0.0 {
        println!("  note: /metrics counts {from_metrics:.0} non-2xx responses (warm-up included)");
    }
    let (_, hwm_mib) = rss_mib(served.pid())?;
    let token_lookups = match (token_dbs, before) {
        (Some(dbs), Some(b)) => token_scans(cluster, dbs).ok().map(|a| a.saturating_sub(b)),
        _ => None,
    };
    served.stop()?;
    Ok(GatewayRun {
        wrk,
        cpu,
        max_open,
        evictions,
        opened,
        hwm_mib,
        token_lookups,
        pg,
    })
}

/// Scans of `tenantry.tokens` summed over `dbs` (from the statistics).
pub(super) fn token_scans(cluster: &Cluster, dbs: &[String]) -> Result<u64> {
    let mut script = String::new();
    for db in dbs {
        let _ = writeln!(
            script,
            "\\c {db}\nSELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) \
             FROM pg_stat_user_tables WHERE schemaname = 'tenantry' AND relname = 'tokens';"
        );
    }
    let out = cluster.psql("postgres", &script)?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}

pub(super) struct Idle {
    pub(super) startup: Duration,
    pub(super) rss_mib: f64,
}

/// `tenantry serve` with `k` tenants configured (one shared password file),
/// VmRSS 1 s after its first line.
/// The gateway over `targets` under an open-loop load of `rate` requests a
/// second: a warm-up at the same rate, then the measured run.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_loop_run(
    bin: &Path,
    config: &Path,
    admin_url: &str,
    workdir: &Path,
    budget: usize,
    targets: &[Target],
    rate: u32,
    load: &Load<'_>,
) -> Result<super::openloop::OpenLoop> {
    let served = Served::start(bin, config, Some(admin_url), workdir, budget)?;
    check_widget(&served.api, &[&targets[0], &targets[targets.len() - 1]])?;
    if !load.warmup.is_zero() {
        super::openloop::open_loop(&served.api, targets, rate, load.warmup, load.connections)?;
    }
    let run =
        super::openloop::open_loop(&served.api, targets, rate, load.duration, load.connections)?;
    served.stop()?;
    Ok(run)
}

pub(super) fn idle_rss(
    bin: &Path,
    schema: &Path,
    workdir: &Path,
    admin_url: &str,
    k: usize,
    args: &Args,
) -> Result<Idle> {
    let pw = workdir.join("shared-password");
    std::fs::write(&pw, "not-a-real-password\n")?;
    // Password files must be private (0600), or tenantry refuses them.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    gateway_secrets(&workdir.join("idle-secrets"), (1..=k).map(tenant))?;
    let toml = workdir.join("idle.toml");
    std::fs::write(&toml, render(k, schema, args.pool_size, Some(&pw)))?;
    let served = Served::start(bin, &toml, Some(admin_url), workdir, args.max_connections)?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss, _) = rss_mib(served.pid())?;
    let startup = served.started_after;
    served.stop()?;
    Ok(Idle {
        startup,
        rss_mib: rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_line() {
        let line = "Gateway serving 3 tenant(s) from x.toml on http://127.0.0.1:4001 (admin: http://127.0.0.1:9090); Ctrl-C or SIGTERM stops it.";
        assert_eq!(
            parse_first_line(line),
            Some(("127.0.0.1:4001".into(), "127.0.0.1:9090".into()))
        );
        assert_eq!(parse_first_line("error: x"), None);
    }

    #[test]
    fn reads_metrics() {
        let text = "# TYPE tenantry_connections_open gauge\ntenantry_connections_open 42\n\
                    tenantry_connections_budget 90\n\
                    tenantry_requests_total{tenant=\"a\",status=\"200\"} 10\n\
                    tenantry_requests_total{tenant=\"a\",status=\"503\"} 2\n";
        assert_eq!(metric(text, "tenantry_connections_open"), Some(42.0));
        assert_eq!(metric(text, "tenantry_connections"), None);
        assert_eq!(non_2xx_from_metrics(text), 2.0);
    }
}
