//! Side by side: sssonector (1 worker), HAProxy (`mode tcp`, `nbthread 1`) and nginx (`stream`, `worker_processes 1`), each a separate process in front of the same built-in upstreams on loopback.
//!
//! `cargo bench --bench compare` (full: 3 rounds) or `cargo bench --bench compare -- --quick`
//! (1 round); `-- --rounds N` sets the number of rounds.
//! Measures, on a fresh proxy process per measurement:
//! - bulk throughput of one stream, upload (to a sink) and download (from a source), MiB/s;
//! - 64-byte request/response over 50 connections for a fixed time: requests/s, latency, and
//!   the proxy's CPU time (utime+stime of its processes, from /proc/PID/stat) per request;
//! - RSS per idle session: proxy VmRSS (summed over its processes) after opening 4000
//!   established sessions, minus before, divided by 4000.
//!
//! Each round runs every measurement on every proxy, the proxies interleaved per measurement
//! and their order rotated by one each round, so drift of a shared machine hits all of them.
//! The report gives, per metric and proxy, the median across rounds with the min–max spread,
//! and ratios (sssonector ÷ peer) of the medians.
//!
//! Prints a table with ratios and writes it as markdown to `<target dir>/bench-compare.md`
//! (with every round's raw values). A missing peer binary is skipped with a message (a
//! failure when `CI=true`); a proxy that fails to start or to carry the load is reported as
//! `failed: ...` for that measurement.
//! Every child runs in its own process group, killed on drop, on panic and on Ctrl-C.

mod common;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{free_port, round_order, setup, Kind, Proc, Proxy, Route, Setup};
use common::report::{
    cell, machine, markdown_table, median_of, print_table, ratio, raw_cell, Measured, Stat,
};
use sssonector::loadgen::{self, Bulk, BulkMode, RequestResponse, ServerKind, Upstream};

const MIB: u64 = 1024 * 1024;
const RR_CONNECTIONS: usize = 50;
const RR_PAYLOAD: usize = 64;
const IDLE_SESSIONS: usize = 4000;
/// Full run, per round and proxy: MiB of each bulk stream and seconds of the
/// request/response run. Three rounds of three proxies take about 2.5 minutes on 2 cores.
const FULL_BULK_MIB: u64 = 2048;
const FULL_RR_SECS: u64 = 10;

struct Params {
    quick: bool,
    /// Each round runs every measurement on every proxy; the report shows medians.
    rounds: usize,
    bulk_bytes: u64,
    rr_duration: Duration,
}

/// `--quick` and `--rounds N` (or `--rounds=N`); cargo bench's own `--bench` and anything
/// else unknown is ignored on purpose.
fn parse_args(args: &[String]) -> Result<Params, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == "--rounds" {
            Some(it.next().ok_or("--rounds needs a value")?.as_str())
        } else {
            a.strip_prefix("--rounds=")
        };
        if let Some(v) = v {
            match v.parse::<usize>() {
                Ok(n) if n >= 1 => rounds = Some(n),
                _ => return Err(format!("--rounds wants a whole number >= 1, not {v:?}")),
            }
        }
    }
    Ok(if quick {
        Params {
            quick,
            rounds: rounds.unwrap_or(1),
            bulk_bytes: 512 * MIB,
            rr_duration: Duration::from_secs(3),
        }
    } else {
        Params {
            quick,
            rounds: rounds.unwrap_or(3),
            bulk_bytes: FULL_BULK_MIB * MIB,
            rr_duration: Duration::from_secs(FULL_RR_SECS),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// (ppid, utime + stime in ticks) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((ppid, _)) = proc_stat(pid) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for &(pid, ppid) in &parents {
            if ppid == p && seen.insert(pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    tree
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| proc_stat(p))
        .map(|(_, t)| t)
        .sum()
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------------------------

/// The three listeners every proxy gets: to the echo, the sink and the source upstream.
struct Ports {
    echo: u16,
    sink: u16,
    source: u16,
}

struct Upstreams {
    echo: Upstream,
    sink: Upstream,
    source: Upstream,
}

/// Starts `p` with three listeners, to the echo, the sink and the source upstream.
fn start_proxy(p: &Proxy, dir: &Path, up: &Upstreams) -> Result<(Proc, Ports), String> {
    let ports = (|| -> io::Result<Ports> {
        Ok(Ports {
            echo: free_port()?,
            sink: free_port()?,
            source: free_port()?,
        })
    })()
    .map_err(|e| format!("cannot pick ports: {e}"))?;
    let routes = [
        Route {
            name: "echo",
            port: ports.echo,
            upstream: up.echo.addr(),
        },
        Route {
            name: "sink",
            port: ports.sink,
            upstream: up.sink.addr(),
        },
        Route {
            name: "source",
            port: ports.source,
            upstream: up.source.addr(),
        },
    ];
    // Room for the idle-session measurement (its default max_active is 1000).
    let proc = p.start(dir, &routes, "  pool:\n    max_active: 9000\n")?;
    Ok((proc, ports))
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    bulk_up: Option<Result<f64, String>>,
    bulk_down: Option<Result<f64, String>>,
    rr_rps: Option<Result<f64, String>>,
    rr_p50_us: Option<Result<f64, String>>,
    rr_p99_us: Option<Result<f64, String>>,
    cpu_us_per_req: Option<Result<f64, String>>,
    rss_per_session: Option<Result<f64, String>>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Attaches the proxy's own exit message if it died during the load.
fn blame(proc: &mut Proc, e: io::Error) -> String {
    match proc.exited() {
        Some(died) => died,
        None => e.to_string(),
    }
}

fn measure_bulk(
    p: &Proxy,
    dir: &Path,
    up: &Upstreams,
    mode: BulkMode,
    bytes: u64,
) -> Result<f64, String> {
    let (mut proc, ports) = start_proxy(p, dir, up)?;
    let port = if mode == BulkMode::Sink {
        ports.sink
    } else {
        ports.source
    };
    let mut cfg = Bulk::new(addr(port), mode, bytes);
    cfg.timeout = Duration::from_secs(120);
    let r = loadgen::bulk(&cfg).map_err(|e| blame(&mut proc, e))?;
    Ok(r.mib_per_sec())
}

struct RrNumbers {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
}

fn measure_rr(
    p: &Proxy,
    dir: &Path,
    up: &Upstreams,
    duration: Duration,
    hz: u64,
) -> Result<RrNumbers, String> {
    let (mut proc, ports) = start_proxy(p, dir, up)?;
    // Warm-up: first-use allocations in the proxy stay out of the measured part.
    let mut warm = RequestResponse::new(addr(ports.echo), RR_CONNECTIONS, RR_PAYLOAD);
    warm.requests = Some(5000);
    warm.timeout = Duration::from_secs(30);
    loadgen::request_response(&warm).map_err(|e| blame(&mut proc, e))?;

    let mut cfg = RequestResponse::new(addr(ports.echo), RR_CONNECTIONS, RR_PAYLOAD);
    cfg.duration = Some(duration);
    cfg.timeout = duration + Duration::from_secs(30);
    let pids = process_tree(proc.pid());
    let cpu0 = cpu_ticks(&pids);
    let r = loadgen::request_response(&cfg).map_err(|e| blame(&mut proc, e))?;
    let cpu1 = cpu_ticks(&pids);
    let cpu_s = (cpu1.saturating_sub(cpu0)) as f64 / hz as f64;
    Ok(RrNumbers {
        rps: r.requests_per_sec(),
        p50_us: r.latency.p50.as_secs_f64() * 1e6,
        p99_us: r.latency.p99.as_secs_f64() * 1e6,
        cpu_us_per_req: cpu_s * 1e6 / r.requests.max(1) as f64,
    })
}

/// Bytes of proxy RSS per established idle session.
fn measure_idle(p: &Proxy, dir: &Path, up: &Upstreams) -> Result<f64, String> {
    let (mut proc, ports) = start_proxy(p, dir, up)?;
    // One session opened and closed first, so one-time setup is not charged to the sessions.
    drop(
        loadgen::idle_sessions(addr(ports.echo), 1, Duration::from_secs(10))
            .map_err(|e| blame(&mut proc, e))?,
    );
    std::thread::sleep(Duration::from_millis(300));
    let pids = process_tree(proc.pid());
    let before = rss_kib(&pids);
    let socks = loadgen::idle_sessions(addr(ports.echo), IDLE_SESSIONS, Duration::from_secs(60))
        .map_err(|e| blame(&mut proc, e))?;
    // Let the proxy finish whatever it does after the last echo before sampling.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&process_tree(proc.pid()));
    if let Some(died) = proc.exited() {
        return Err(died);
    }
    drop(socks);
    Ok((after.saturating_sub(before) * 1024) as f64 / IDLE_SESSIONS as f64)
}

/// What every measurement needs besides the proxy.
struct Bench<'a> {
    /// Work dir: one subdirectory per proxy for its configs and logs.
    dir: &'a Path,
    up: &'a Upstreams,
    params: &'a Params,
    /// Clock ticks per second, for /proc CPU times.
    hz: u64,
}

/// One kind of measurement; each starts a fresh proxy process.
#[derive(Clone, Copy)]
enum Step {
    BulkUp,
    BulkDown,
    RequestResponse,
    Idle,
}

const STEPS: [Step; 4] = [
    Step::BulkUp,
    Step::BulkDown,
    Step::RequestResponse,
    Step::Idle,
];

/// Runs one measurement of one proxy and stores its numbers in `r`.
fn run_step(step: Step, p: &Proxy, b: &Bench, tag: &str, r: &mut Results) {
    let (up, params) = (b.up, b.params);
    let sub = b.dir.join(p.kind.name());
    if let Err(e) = fs::create_dir_all(&sub) {
        let err = Err(format!("cannot create {}: {e}", sub.display()));
        match step {
            Step::BulkUp => r.bulk_up = Some(err),
            Step::BulkDown => r.bulk_down = Some(err),
            Step::RequestResponse => {
                r.rr_rps = Some(err.clone());
                r.rr_p50_us = Some(err.clone());
                r.rr_p99_us = Some(err.clone());
                r.cpu_us_per_req = Some(err);
            }
            Step::Idle => r.rss_per_session = Some(err),
        }
        return;
    }
    match step {
        Step::BulkUp => {
            eprintln!("{tag} bulk upload {} MiB", params.bulk_bytes / MIB);
            r.bulk_up = Some(measure_bulk(p, &sub, up, BulkMode::Sink, params.bulk_bytes));
            report_line(tag, "bulk upload MiB/s", &r.bulk_up);
        }
        Step::BulkDown => {
            eprintln!("{tag} bulk download {} MiB", params.bulk_bytes / MIB);
            r.bulk_down = Some(measure_bulk(
                p,
                &sub,
                up,
                BulkMode::Source,
                params.bulk_bytes,
            ));
            report_line(tag, "bulk download MiB/s", &r.bulk_down);
        }
        Step::RequestResponse => {
            eprintln!(
                "{tag} request/response {RR_PAYLOAD} B x {RR_CONNECTIONS} connections, {:?}",
                params.rr_duration
            );
            match measure_rr(p, &sub, up, params.rr_duration, b.hz) {
                Ok(n) => {
                    r.rr_rps = Some(Ok(n.rps));
                    r.rr_p50_us = Some(Ok(n.p50_us));
                    r.rr_p99_us = Some(Ok(n.p99_us));
                    r.cpu_us_per_req = Some(Ok(n.cpu_us_per_req));
                }
                Err(e) => {
                    r.rr_rps = Some(Err(e.clone()));
                    r.rr_p50_us = Some(Err(e.clone()));
                    r.rr_p99_us = Some(Err(e.clone()));
                    r.cpu_us_per_req = Some(Err(e));
                }
            }
            report_line(tag, "requests/s", &r.rr_rps);
            report_line(tag, "CPU µs/request", &r.cpu_us_per_req);
        }
        Step::Idle => {
            eprintln!("{tag} {IDLE_SESSIONS} idle sessions");
            r.rss_per_session = Some(measure_idle(p, &sub, up));
            report_line(tag, "RSS bytes/idle session", &r.rss_per_session);
        }
    }
}

/// All rounds: in each round, every measurement in turn, each run on every proxy in that
/// round's order. Returns, per proxy (in `proxies` order), one `Results` per round.
fn run_rounds(proxies: &[Proxy], b: &Bench) -> Vec<(Kind, Vec<Results>)> {
    let params = b.params;
    let mut all: Vec<(Kind, Vec<Results>)> = proxies
        .iter()
        .map(|p| {
            (
                p.kind,
                (0..params.rounds).map(|_| Results::default()).collect(),
            )
        })
        .collect();
    for round in 0..params.rounds {
        let order = round_order(proxies.len(), round);
        let names: Vec<&str> = order.iter().map(|&i| proxies[i].kind.name()).collect();
        eprintln!(
            "bench-compare: round {}/{}: {}",
            round + 1,
            params.rounds,
            names.join(", ")
        );
        for step in STEPS {
            for &i in &order {
                let p = &proxies[i];
                let tag = format!("[{}/{}] [{}]", round + 1, params.rounds, p.kind.name());
                run_step(step, p, b, &tag, &mut all[i].1[round]);
            }
        }
    }
    all
}

fn report_line(tag: &str, what: &str, v: &Option<Result<f64, String>>) {
    match v {
        Some(Ok(x)) => eprintln!("{tag}   {what}: {x:.1}"),
        Some(Err(e)) => eprintln!("{tag}   {what}: failed: {e}"),
        None => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

struct Metric {
    label: &'static str,
    higher_is_better: bool,
    decimals: usize,
    get: fn(&Results) -> &Option<Result<f64, String>>,
}

const METRICS: &[Metric] = &[
    Metric {
        label: "bulk upload, 1 stream (MiB/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.bulk_up,
    },
    Metric {
        label: "bulk download, 1 stream (MiB/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.bulk_down,
    },
    Metric {
        label: "64 B req/resp, 50 conns (req/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.rr_rps,
    },
    Metric {
        label: "req/resp latency p50 (µs)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rr_p50_us,
    },
    Metric {
        label: "req/resp latency p99 (µs)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rr_p99_us,
    },
    Metric {
        label: "proxy CPU per request (µs)",
        higher_is_better: false,
        decimals: 2,
        get: |r| &r.cpu_us_per_req,
    },
    Metric {
        label: "RSS per idle session (bytes, 4000 sessions)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rss_per_session,
    },
];

/// The metric's value in every round.
fn summarize(rounds: &[Results], m: &Metric) -> Option<Result<Stat, String>> {
    let vals: Vec<&Measured> = rounds.iter().map(|r| (m.get)(r)).collect();
    common::report::summarize(&vals)
}

/// Rows of cells: header first. Each proxy's cell is its median over the rounds with the
/// min–max spread; ratios are sssonector ÷ peer of the medians (read with the metric's
/// direction: above 1 is better for throughput, worse for latency, CPU and memory).
fn table(results: &[(Kind, Vec<Results>)]) -> Vec<Vec<String>> {
    let get = |k: Kind| results.iter().find(|(kk, _)| *kk == k).map(|(_, r)| r);
    let mut rows = vec![vec![
        "metric".to_string(),
        "better".to_string(),
        "sssonector".into(),
        "haproxy".into(),
        "nginx".into(),
        "sss ÷ haproxy".into(),
        "sss ÷ nginx".into(),
        "sss ÷ better peer".into(),
    ]];
    for m in METRICS {
        let v = |k: Kind| get(k).and_then(|r| summarize(r, m));
        let (s, h, n) = (v(Kind::Sssonector), v(Kind::Haproxy), v(Kind::Nginx));
        let best = match (median_of(&h), median_of(&n)) {
            (Some(a), Some(b)) => Some(if m.higher_is_better {
                a.max(b)
            } else {
                a.min(b)
            }),
            (a, b) => a.or(b),
        };
        rows.push(vec![
            m.label.to_string(),
            if m.higher_is_better {
                "higher"
            } else {
                "lower"
            }
            .into(),
            cell(&s, m.decimals),
            cell(&h, m.decimals),
            cell(&n, m.decimals),
            ratio(median_of(&s), median_of(&h)),
            ratio(median_of(&s), median_of(&n)),
            ratio(median_of(&s), best),
        ]);
    }
    rows
}

/// Every round's raw value: one row per metric and proxy, one column per round.
fn per_round_table(results: &[(Kind, Vec<Results>)], rounds: usize) -> Vec<Vec<String>> {
    let mut header = vec!["metric".to_string(), "proxy".to_string()];
    header.extend((1..=rounds).map(|r| format!("round {r}")));
    let mut rows = vec![header];
    for m in METRICS {
        for (k, rs) in results {
            let mut row = vec![m.label.to_string(), k.name().to_string()];
            row.extend(rs.iter().map(|r| raw_cell((m.get)(r), m.decimals)));
            rows.push(row);
        }
    }
    rows
}

fn mode_line(params: &Params) -> String {
    format!(
        "Mode: {}, {} round{} (every measurement on every proxy in each round, proxies \
         interleaved, order rotated each round); bulk {} MiB per stream; request/response \
         {RR_PAYLOAD} B over {RR_CONNECTIONS} connections for {:?}; {IDLE_SESSIONS} idle \
         sessions.",
        if params.quick { "quick" } else { "full" },
        params.rounds,
        if params.rounds == 1 { "" } else { "s" },
        params.bulk_bytes / MIB,
        params.rr_duration
    )
}

const RATIO_NOTE: &str = "Cells are the median across rounds (min–max in parentheses). \
    Ratios are sssonector ÷ peer of the medians: above 1 is better for throughput and \
    requests/s, worse for latency, CPU and memory.";

fn markdown(
    rows: &[Vec<String>],
    results: &[(Kind, Vec<Results>)],
    proxies: &[(Kind, String)],
    params: &Params,
    elapsed: Duration,
) -> String {
    let mut md = String::from("# sssonector vs HAProxy vs nginx\n\n");
    let _ = writeln!(md, "{}\n", mode_line(params));
    let _ = writeln!(md, "Machine: {}\n", machine());
    let _ = writeln!(md, "Run time: {:.0} s.\n", elapsed.as_secs_f64());
    for (k, v) in proxies {
        let _ = writeln!(md, "- {}: {v}", k.name());
    }
    md.push('\n');
    markdown_table(&mut md, rows, 2);
    let _ = writeln!(md, "\n{RATIO_NOTE}");
    if params.rounds > 1 {
        md.push_str("\n## Per round\n\n");
        markdown_table(&mut md, &per_round_table(results, params.rounds), 2);
    }
    let mut failures = String::new();
    for (k, rs) in results {
        for (round, r) in rs.iter().enumerate() {
            for m in METRICS {
                if let Some(Err(e)) = (m.get)(r) {
                    let _ = writeln!(
                        failures,
                        "- round {} / {} / {}: failed: {e}",
                        round + 1,
                        k.name(),
                        m.label
                    );
                }
            }
        }
    }
    if !failures.is_empty() {
        md.push_str("\n## Failures\n\n");
        md.push_str(&failures);
    }
    md
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let params = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-compare: {e}");
            std::process::exit(2);
        }
    };
    let Setup {
        ci,
        target_dir,
        work,
        proxies,
    } = setup("bench-compare", Path::new(env!("CARGO_TARGET_TMPDIR")));
    let hz = clock_ticks_per_sec();

    let upstreams = (|| -> io::Result<Upstreams> {
        Ok(Upstreams {
            echo: Upstream::start(ServerKind::Echo)?,
            sink: Upstream::start(ServerKind::Sink)?,
            source: Upstream::start(ServerKind::Source)?,
        })
    })();
    let upstreams = match upstreams {
        Ok(u) => u,
        Err(e) => {
            eprintln!("bench-compare: cannot start upstreams: {e}");
            std::process::exit(1);
        }
    };

    eprintln!("bench-compare: {}", mode_line(&params));
    let started = Instant::now();
    let bench = Bench {
        dir: &work,
        up: &upstreams,
        params: &params,
        hz,
    };
    let results = run_rounds(&proxies, &bench);
    let elapsed = started.elapsed();
    eprintln!("bench-compare: done in {:.0} s", elapsed.as_secs_f64());

    let rows = table(&results);
    println!();
    println!("{}", mode_line(&params));
    println!("Machine: {}", machine());
    for p in &proxies {
        println!("  {}: {}", p.kind.name(), p.version);
    }
    println!();
    print_table(&rows);
    println!("\n{RATIO_NOTE}");
    let versions: Vec<(Kind, String)> = proxies
        .iter()
        .map(|p| (p.kind, p.version.clone()))
        .collect();
    let md = markdown(&rows, &results, &versions, &params, elapsed);
    let out = target_dir.join("bench-compare.md");
    match fs::write(&out, md) {
        Ok(()) => println!("written to {}", out.display()),
        Err(e) => eprintln!("bench-compare: cannot write {}: {e}", out.display()),
    }
    // A peer that failed its measurements is a harness problem CI should see; sssonector's
    // failures are reported but do not fail the run while its data plane is unfinished.
    let peer_failed = results.iter().any(|(k, rs)| {
        *k != Kind::Sssonector
            && rs
                .iter()
                .any(|r| METRICS.iter().any(|m| matches!((m.get)(r), Some(Err(_)))))
    });
    if ci && peer_failed {
        eprintln!("bench-compare: CI=true and a peer measurement failed");
        std::process::exit(1);
    }
}
