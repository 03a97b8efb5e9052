//! [`Metrics`]: request counters and latency histograms per tenant, rendered
//! together with the pool registry's [`Stats`] as Prometheus text exposition
//! (format 0.0.4), written by hand.
//!
//! What does not live here: the `/metrics` route (the admin listener serves
//! [`Metrics::render`] with `Content-Type: text/plain; version=0.0.4`) and
//! the collection of pool numbers (see [`crate::pools::Registry::stats`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::pools::Stats;

/// Upper bounds of the latency histogram buckets, in seconds, as rendered.
const BUCKETS: [(f64, &str); 12] = [
    (0.001, "0.001"),
    (0.0025, "0.0025"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
];

/// The gateway's own counters; one per process, shared by all requests.
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (tenant, status) -> finished requests.
    requests: BTreeMap<(String, u16), u64>,
    durations: BTreeMap<String, Histogram>,
    rate_limited: BTreeMap<String, u64>,
    unauthenticated_limited: u64,
    /// Requests that waited for their tenant's move, per tenant.
    held: BTreeMap<String, u64>,
    /// Of which answered 503 `tenant_moving` (the move outlasted the wait).
    moving: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Histogram {
    /// Not cumulative: `buckets[i]` counts observations in (BUCKETS[i-1], BUCKETS[i]].
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|(le, _)| seconds <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            inner: Mutex::default(),
        }
    }

    /// One finished request. `tenant` is "-" when none was resolved.
    pub fn request(&self, tenant: &str, status: u16, latency: Duration) {
        let mut inner = self.lock();
        *inner
            .requests
            .entry((tenant.to_owned(), status))
            .or_default() += 1;
        match inner.durations.get_mut(tenant) {
            Some(h) => h.observe(latency.as_secs_f64()),
            None => {
                let mut h = Histogram::default();
                h.observe(latency.as_secs_f64());
                inner.durations.insert(tenant.to_owned(), h);
            }
        }
    }

    /// A request refused by the tenant's rate limit.
    pub fn rate_limited(&self, tenant: &str) {
        count(&mut self.lock().rate_limited, tenant);
    }

    /// A request held while its tenant is being moved.
    pub fn held(&self, tenant: &str) {
        count(&mut self.lock().held, tenant);
    }

    /// A held request answered 503 `tenant_moving`.
    pub fn moving(&self, tenant: &str) {
        count(&mut self.lock().moving, tenant);
    }

    /// A request without a valid token refused by its address's limit.
    pub fn unauthenticated_limited(&self) {
        self.lock().unauthenticated_limited += 1;
    }

    /// Text for `/metrics`: `tenantry_requests_total{tenant,status}`,
    /// `tenantry_request_duration_seconds{tenant}` (histogram, buckets
    /// 0.001..5), `tenantry_rate_limited_total{tenant}`,
    /// `tenantry_unauthenticated_rate_limited_total`,
    /// `tenantry_requests_held_total{tenant}` (requests that waited for
    /// their tenant's move), `tenantry_tenant_moving_total{tenant}` (of
    /// which answered 503 `tenant_moving`), and from each server's
    /// pools (every sample labelled `server`):
    /// `tenantry_pool_connections{server,tenant,role,state="open"|"in_use"}`,
    /// `tenantry_pool_waiting{server,tenant,role}`,
    /// `tenantry_pool_evictions_total`, `tenantry_pool_rejections_total`,
    /// `tenantry_pool_down_rejections_total`,
    /// `tenantry_connections_opened_total`, `tenantry_connections_open`,
    /// `tenantry_connections_budget`, `tenantry_server_down` (1 while the
    /// server is marked down).
    pub fn render(&self, servers: &[(String, Stats, bool)]) -> String {
        let mut out = String::new();
        {
            let inner = self.lock();
            family(
                &mut out,
                "tenantry_requests_total",
                "counter",
                "Finished HTTP requests by tenant and status.",
            );
            for ((tenant, status), n) in &inner.requests {
                let status = status.to_string();
                sample(
                    &mut out,
                    "tenantry_requests_total",
                    &[("tenant", tenant), ("status", &status)],
                    *n,
                );
            }

            family(
                &mut out,
                "tenantry_request_duration_seconds",
                "histogram",
                "Time from request to response, by tenant.",
            );
            for (tenant, h) in &inner.durations {
                let mut cumulative = 0;
                for ((_, le), n) in BUCKETS.iter().zip(h.buckets) {
                    cumulative += n;
                    sample(
                        &mut out,
                        "tenantry_request_duration_seconds_bucket",
                        &[("tenant", tenant), ("le", le)],
                        cumulative,
                    );
                }
                sample(
                    &mut out,
                    "tenantry_request_duration_seconds_bucket",
                    &[("tenant", tenant), ("le", "+Inf")],
                    h.count,
                );
                sample(
                    &mut out,
                    "tenantry_request_duration_seconds_sum",
                    &[("tenant", tenant)],
                    h.sum,
                );
                sample(
                    &mut out,
                    "tenantry_request_duration_seconds_count",
                    &[("tenant", tenant)],
                    h.count,
                );
            }

            family(
                &mut out,
                "tenantry_rate_limited_total",
                "counter",
                "Requests refused by the tenant's rate limit.",
            );
            for (tenant, n) in &inner.rate_limited {
                sample(
                    &mut out,
                    "tenantry_rate_limited_total",
                    &[("tenant", tenant)],
                    *n,
                );
            }

            family(
                &mut out,
                "tenantry_unauthenticated_rate_limited_total",
                "counter",
                "Requests without a valid token refused by their client address's limit.",
            );
            sample(
                &mut out,
                "tenantry_unauthenticated_rate_limited_total",
                &[],
                inner.unauthenticated_limited,
            );

            for (name, help, counts) in [
                (
                    "tenantry_requests_held_total",
                    "Requests that waited while their tenant was being moved to another server.",
                    &inner.held,
                ),
                (
                    "tenantry_tenant_moving_total",
                    "Held requests answered 503 tenant_moving: the move outlasted the checkout timeout.",
                    &inner.moving,
                ),
            ] {
                family(&mut out, name, "counter", help);
                for (tenant, n) in counts {
                    sample(&mut out, name, &[("tenant", tenant)], *n);
                }
            }
        }

        family(
            &mut out,
            "tenantry_pool_connections",
            "gauge",
            "Database connections of each (tenant, role) pool: open, and of those in use.",
        );
        for (server, pools, _) in servers {
            for p in &pools.pools {
                let (tenant, role) = (&p.key.tenant, &p.key.role);
                for (state, n) in [("open", p.size), ("in_use", p.in_use)] {
                    sample(
                        &mut out,
                        "tenantry_pool_connections",
                        &[
                            ("server", server),
                            ("tenant", tenant),
                            ("role", role),
                            ("state", state),
                        ],
                        n,
                    );
                }
            }
        }
        family(
            &mut out,
            "tenantry_pool_waiting",
            "gauge",
            "Requests queued for a connection of each (tenant, role) pool.",
        );
        for (server, pools, _) in servers {
            for p in &pools.pools {
                sample(
                    &mut out,
                    "tenantry_pool_waiting",
                    &[
                        ("server", server),
                        ("tenant", &p.key.tenant),
                        ("role", &p.key.role),
                    ],
                    p.waiting,
                );
            }
        }
        /// A per-server number: from its pools' stats and whether it is down.
        type Value = fn(&Stats, bool) -> u64;
        let totals: [(&str, &str, &str, Value); 7] = [
            (
                "tenantry_pool_evictions_total",
                "counter",
                "Pools whose idle connections were closed to make room under the budget.",
                |p, _| p.evictions,
            ),
            (
                "tenantry_connections_opened_total",
                "counter",
                "Database connections dialed (each a new backend and a login).",
                |p, _| p.opened,
            ),
            (
                "tenantry_pool_rejections_total",
                "counter",
                "Requests answered busy: no connection within the checkout timeout.",
                |p, _| p.rejections,
            ),
            (
                "tenantry_pool_down_rejections_total",
                "counter",
                "Requests failed fast because the server or the tenant's database is down or refused the login.",
                |p, _| p.down_rejections,
            ),
            (
                "tenantry_connections_open",
                "gauge",
                "Database connections open across all pools of the server.",
                |p, _| p.open_connections as u64,
            ),
            (
                "tenantry_connections_budget",
                "gauge",
                "Most database connections all pools of the server together may hold.",
                |p, _| p.budget as u64,
            ),
            (
                "tenantry_server_down",
                "gauge",
                "1 while the server is marked down (its tenants fail fast), else 0.",
                |_, down| u64::from(down),
            ),
        ];
        for (name, kind, help, value) in totals {
            family(&mut out, name, kind, help);
            for (server, pools, down) in servers {
                sample(&mut out, name, &[("server", server)], value(pools, *down));
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One more for `tenant`.
fn count(counts: &mut BTreeMap<String, u64>, tenant: &str) {
    match counts.get_mut(tenant) {
        Some(n) => *n += 1,
        None => {
            counts.insert(tenant.to_owned(), 1);
        }
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line: `name{label="value",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the exposition format wants it: `\`, `"` and newline
/// escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::{PoolKey, PoolStat};

    /// One parsed sample line: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A small parser of the exposition format, strict about what we emit.
    fn parse(text: &str) -> Vec<Sample> {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                let mut words = line.splitn(4, ' ');
                assert_eq!(words.next(), Some("#"));
                assert!(matches!(words.next(), Some("HELP" | "TYPE")), "{line}");
                assert!(words.next().is_some_and(|n| n.starts_with("tenantry_")));
                continue;
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, labels) = match head.split_once('{') {
                None => (head.to_owned(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    (name.to_owned(), parse_labels(body))
                }
            };
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            samples.push((name, labels, value));
        }
        samples
    }

    fn parse_labels(body: &str) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'));
            let mut value = String::new();
            loop {
                match chars.next().unwrap() {
                    '\\' => match chars.next().unwrap() {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in a label value"),
                    c => value.push(c),
                }
            }
            labels.push((name, value));
            match chars.next() {
                None | Some(',') => {}
                Some(c) => panic!("unexpected {c}"),
            }
        }
        labels
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }

    fn stats() -> Stats {
        Stats {
            pools: vec![PoolStat {
                key: PoolKey {
                    tenant: "shop".into(),
                    role: "customer".into(),
                },
                size: 3,
                in_use: 2,
                waiting: 1,
                max_size: 8,
            }],
            open_connections: 5,
            budget: 40,
            evictions: 7,
            opened: 11,
            rejections: 2,
            down_rejections: 4,
        }
    }

    #[test]
    fn requests_and_latency_histogram() {
        let m = Metrics::new();
        m.request("shop", 200, Duration::from_micros(500));
        m.request("shop", 200, Duration::from_millis(30));
        m.request("shop", 404, Duration::from_secs(9));
        m.request("-", 404, Duration::from_millis(2));
        let s = parse(&m.render(&[("a".to_owned(), Stats::default(), false)]));

        let total = "tenantry_requests_total";
        assert_eq!(
            value(&s, total, &[("tenant", "shop"), ("status", "200")]),
            Some(2.0)
        );
        assert_eq!(
            value(&s, total, &[("tenant", "shop"), ("status", "404")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, total, &[("tenant", "-"), ("status", "404")]),
            Some(1.0)
        );

        let bucket = "tenantry_request_duration_seconds_bucket";
        let le = |le| value(&s, bucket, &[("tenant", "shop"), ("le", le)]);
        assert_eq!(le("0.001"), Some(1.0));
        assert_eq!(le("0.025"), Some(1.0));
        assert_eq!(le("0.05"), Some(2.0));
        assert_eq!(le("5"), Some(2.0));
        assert_eq!(le("+Inf"), Some(3.0));
        let count = value(
            &s,
            "tenantry_request_duration_seconds_count",
            &[("tenant", "shop")],
        );
        assert_eq!(count, Some(3.0));
        let sum = value(
            &s,
            "tenantry_request_duration_seconds_sum",
            &[("tenant", "shop")],
        )
        .unwrap();
        assert!((sum - 9.0305).abs() < 1e-9, "{sum}");
        // Buckets never decrease.
        let shop: Vec<f64> = s
            .iter()
            .filter(|(n, l, _)| n == bucket && l[0].1 == "shop")
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(shop.len(), BUCKETS.len() + 1);
        assert!(shop.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn pool_numbers_and_rate_limits() {
        let m = Metrics::new();
        m.rate_limited("shop");
        m.rate_limited("shop");
        m.held("shop");
        m.held("shop");
        m.moving("shop");
        let text = m.render(&[
            ("a".to_owned(), stats(), false),
            ("b".to_owned(), Stats::default(), true),
        ]);
        let a = &[("server", "a")];
        assert!(text.contains("# TYPE tenantry_request_duration_seconds histogram\n"));
        assert!(text.contains("# TYPE tenantry_pool_evictions_total counter\n"));
        assert!(text.contains("\ntenantry_connections_budget{server=\"a\"} 40\n"));
        let s = parse(&text);
        assert_eq!(
            value(&s, "tenantry_rate_limited_total", &[("tenant", "shop")]),
            Some(2.0)
        );
        let shop = &[("tenant", "shop")];
        assert_eq!(value(&s, "tenantry_requests_held_total", shop), Some(2.0));
        assert_eq!(value(&s, "tenantry_tenant_moving_total", shop), Some(1.0));
        let conns = |state| {
            value(
                &s,
                "tenantry_pool_connections",
                &[
                    ("server", "a"),
                    ("tenant", "shop"),
                    ("role", "customer"),
                    ("state", state),
                ],
            )
        };
        assert_eq!(conns("open"), Some(3.0));
        assert_eq!(conns("in_use"), Some(2.0));
        let waiting = [("server", "a"), ("tenant", "shop"), ("role", "customer")];
        assert_eq!(value(&s, "tenantry_pool_waiting", &waiting), Some(1.0));
        assert_eq!(value(&s, "tenantry_pool_evictions_total", a), Some(7.0));
        assert_eq!(
            value(&s, "tenantry_connections_opened_total", a),
            Some(11.0)
        );
        assert_eq!(value(&s, "tenantry_pool_rejections_total", a), Some(2.0));
        assert_eq!(
            value(&s, "tenantry_pool_down_rejections_total", a),
            Some(4.0)
        );
        // Every server has its own numbers, and says whether it is down.
        let b = &[("server", "b")];
        assert_eq!(value(&s, "tenantry_server_down", a), Some(0.0));
        assert_eq!(value(&s, "tenantry_server_down", b), Some(1.0));
        assert_eq!(value(&s, "tenantry_connections_open", b), Some(0.0));
        assert_eq!(value(&s, "tenantry_connections_open", a), Some(5.0));
        assert_eq!(value(&s, "tenantry_connections_budget", a), Some(40.0));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let odd = "a\"b\\c\nd";
        m.request(odd, 500, Duration::from_millis(1));
        let text = m.render(&[("a".to_owned(), Stats::default(), false)]);
        assert!(text.contains(r#"tenantry_requests_total{tenant="a\"b\\c\nd",status="500"} 1"#));
        let s = parse(&text);
        let labels = [("tenant", odd), ("status", "500")];
        assert_eq!(value(&s, "tenantry_requests_total", &labels), Some(1.0));
    }

    #[test]
    fn an_empty_registry_renders_only_families_and_totals() {
        let text = Metrics::new().render(&[("a".to_owned(), Stats::default(), false)]);
        let s = parse(&text);
        assert!(s.iter().all(|(_, labels, _)| labels.len() <= 1));
        assert_eq!(
            value(&s, "tenantry_connections_open", &[("server", "a")]),
            Some(0.0)
        );
        assert!(text.ends_with('\n'));
    }
}
