//! The gateway benchmark's report: the ratios against the baseline, the
//! targets they are held to, and the setup and memory numbers. Nothing here
//! measures anything.

use std::time::Duration;

use crate::{report_targets, secs, RSS_TARGET_MIB};

use super::*;

pub(super) struct Report<'a> {
    pub(super) gw: &'a GatewayRun,
    /// The same tenants, requests spread over admin, developer and customer.
    pub(super) roles: &'a GatewayRun,
    pub(super) open: &'a super::openloop::OpenLoop,
    /// The many tenants, Zipf s=1.0.
    pub(super) zipf: &'a GatewayRun,
    pub(super) logins: &'a [super::logins::LoginCost],
    pub(super) wide: Option<&'a GatewayRun>,
    pub(super) base: &'a BaselineRun,
    pub(super) many: &'a GatewayRun,
    pub(super) idle: &'a Idle,
    pub(super) setup: Duration,
    pub(super) cpus: usize,
    pub(super) pg_version: &'a str,
    pub(super) wrk_version: &'a str,
}

pub(super) fn report(args: &Args, r: &Report<'_>) {
    let n = args.tenants;
    let m = args.many_tenants;
    let budget = args.max_connections;
    let (gw, base) = (&r.gw.wrk, &r.base.wrk);
    let tput = gw.rps() / base.rps().max(1e-9);
    let p50 = gw.p50_us / base.p50_us.max(1e-9);
    let p99 = gw.p99_us / base.p99_us.max(1e-9);
    let load = format!(
        "wrk -t{} -c{} -d{}",
        args.threads,
        args.connections,
        secs(args.duration)
    );
    println!("\n## Results: `tenantry serve`\n");
    println!("| metric | gateway | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| throughput, `GET /api/widgets/1` rotating over {n} tenants, `--max-connections {budget}`, {load} | {:.0} req/s | {:.0} req/s (hyper + one pool of {BASELINE_POOL_SIZE}, no routing or auth) | {tput:.2}x | >= {THROUGHPUT_RATIO_TARGET:.1}x |",
        gw.rps(),
        base.rps()
    );
    println!(
        "| p50 latency | {} | {} | {p50:.2}x | - |",
        ms(gw.p50_us),
        ms(base.p50_us)
    );
    println!(
        "| p99 latency | {} | {} | {p99:.2}x | <= {P99_RATIO_TARGET:.1}x |",
        ms(gw.p99_us),
        ms(base.p99_us)
    );
    println!(
        "| non-2xx responses / socket errors | {} / {} | {} / {} | - | 0 |",
        gw.non_2xx,
        gw.socket_errors(),
        base.non_2xx,
        base.socket_errors()
    );
    println!(
        "| server CPU per request (process user+sys) | {:.0} µs | {:.0} µs | {:.2}x | - |",
        r.gw.cpu_us_per_request(),
        r.base.cpu_us_per_request(),
        r.gw.cpu_us_per_request() / r.base.cpu_us_per_request().max(1e-9)
    );
    let (gpg, bpg) = (
        r.gw.pg.cpu_us_per(gw.requests),
        r.base.pg.cpu_us_per(base.requests),
    );
    println!(
        "| PostgreSQL CPU per request (all server processes) | {gpg:.0} µs | {bpg:.0} µs | {:.2}x | - |",
        gpg / bpg.max(1e-9)
    );
    println!(
        "| PostgreSQL transactions per request (pg_stat_database, approximate) | {:.2} | {:.2} | - | - |",
        r.gw.pg.xacts_per(gw.requests),
        r.base.pg.xacts_per(base.requests)
    );
    if let Some(lookups) = r.gw.token_lookups {
        println!(
            "| token lookups reaching the database during the measured run | {lookups} (of {} requests; cache TTL 30 s) | - | - | - |",
            gw.requests
        );
    }
    println!(
        "| pool evictions during warm-up + run, {n} tenants | {:.0} | - | - | - |",
        r.gw.evictions
    );
    if let Some(w) = r.wide {
        println!(
            "| diagnostic: same with `--max-connections {}` | {:.0} req/s, p99 {}, {} evictions | {:.0} req/s, p99 {} | {:.2}x, p99 {:.2}x | - |",
            args.wide_budget,
            w.wrk.rps(),
            ms(w.wrk.p99_us),
            w.evictions,
            base.rps(),
            ms(base.p99_us),
            w.wrk.rps() / base.rps().max(1e-9),
            w.wrk.p99_us / base.p99_us.max(1e-9)
        );
    }
    let mw = &r.many.wrk;
    println!(
        "| {m} tenants, `--max-connections {budget}`: throughput rotating over all {m} hosts | {:.0} req/s (p50 {}, p99 {}) | - | - | - |",
        mw.rps(),
        ms(mw.p50_us),
        ms(mw.p99_us)
    );
    println!(
        "| {m} tenants: non-2xx responses / socket errors | {} / {} | - | - | 0 |",
        mw.non_2xx,
        mw.socket_errors()
    );
    println!(
        "| {m} tenants: highest `tenantry_connections_open` (polled every 100 ms) | {:.0} | - | - | <= {budget} |",
        r.many.max_open
    );
    println!(
        "| {m} tenants: pool evictions during warm-up + run | {:.0} | - | - | - |",
        r.many.evictions
    );
    println!(
        "| {m} tenants: gateway VmHWM after the run | {:.1} MiB | - | - | - |",
        r.many.hwm_mib
    );
    println!(
        "| resident memory, {} tenants configured, idle (VmRSS 1 s after start) | {:.1} MiB | - | - | < {RSS_TARGET_MIB:.0} MiB |",
        args.idle_tenants, r.idle.rss_mib
    );

    println!("\n## Under the connection budget (`--max-connections {budget}`)\n");
    println!("| measure | result | target |");
    println!("|---|---|---|");
    let row = |what: String, run: &GatewayRun, target: &str| {
        println!(
            "| {what} | {:.0} req/s, p99 {}, {} non-2xx, {} socket errors, PostgreSQL CPU {:.0} µs/request, {:.0} evictions, {:.0} connections opened (warm-up and run), at most {:.0} open | {target} |",
            run.wrk.rps(),
            ms(run.wrk.p99_us),
            run.wrk.non_2xx,
            run.wrk.socket_errors(),
            run.pg.cpu_us_per(run.wrk.requests),
            run.evictions,
            run.opened,
            run.max_open
        )
    };
    row(
        format!("{n} tenants uniform, one role"),
        r.gw,
        ">= 3,000 req/s, zero errors",
    );
    row(
        format!("{n} tenants uniform, requests over admin/developer/customer tokens"),
        r.roles,
        ">= 3,000 req/s, zero errors",
    );
    row(
        format!("{m} tenants, Zipf s=1.0"),
        r.zipf,
        ">= 1,100 req/s, zero errors, never above the budget",
    );
    row(format!("{m} tenants uniform"), r.many, ">= 400 req/s");
    println!(
        "| open loop, {} req/s over {n} tenants | p50 {}, p99 {}, p99.9 {}, max {}; {} of {} non-2xx, {} errors | p99 <= 10 ms |",
        r.open.rate,
        ms(r.open.p50_us),
        ms(r.open.p99_us),
        ms(r.open.p999_us),
        ms(r.open.max_us),
        r.open.non_2xx,
        r.open.sent,
        r.open.errors
    );
    for l in r.logins {
        println!(
            "| a login with a {}-round SCRAM verifier | {:.0} logins/s one at a time; client CPU {:.0} µs, server CPU {:.0} µs | - |",
            l.iterations, l.per_second, l.client_cpu_us, l.server_cpu_us
        );
    }
    println!(
        "\nMeasured on one throwaway PostgreSQL {} cluster (fsync off), {} CPU(s) shared by wrk, the server and PostgreSQL; {}; \
         each run after a {} warm-up; plan `bench`: pool_size {}, 100000 requests/s; tenantry logs at its default level (warn). \
         Setup (apply of {} tenants, widgets, tokens) took {}.",
        r.pg_version,
        r.cpus,
        r.wrk_version,
        secs(args.warmup),
        args.pool_size,
        n.max(m),
        secs(r.setup)
    );
    println!(
        "Reproduce: `cargo build --release && cargo run --release -p tenantry-bench -- gateway --tenants {n} --duration {} --connections {}`",
        humantime::format_duration(args.duration),
        args.connections
    );

    let mut missed = Vec::new();
    if tput < THROUGHPUT_RATIO_TARGET {
        missed.push(format!(
            "throughput {tput:.2}x < {THROUGHPUT_RATIO_TARGET:.1}x"
        ));
    }
    if p99 > P99_RATIO_TARGET {
        missed.push(format!("p99 {p99:.2}x > {P99_RATIO_TARGET:.1}x"));
    }
    for (what, w) in [(format!("{n} tenants"), gw), (format!("{m} tenants"), mw)] {
        if w.non_2xx + w.socket_errors() > 0 {
            missed.push(format!(
                "{what}: {} non-2xx, {} socket errors",
                w.non_2xx,
                w.socket_errors()
            ));
        }
    }
    if r.many.max_open > budget as f64 {
        missed.push(format!(
            "{:.0} connections open > budget {budget}",
            r.many.max_open
        ));
    }
    if r.idle.rss_mib >= RSS_TARGET_MIB {
        missed.push(format!(
            "idle RSS {:.1} MiB >= {RSS_TARGET_MIB:.0} MiB",
            r.idle.rss_mib
        ));
    }
    report_targets(&missed);
}

pub(super) fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}
