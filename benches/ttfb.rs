//! New-session time to first byte with a slow-greeting upstream: sssonector (warm pool,
//! `max_idle: 16`) vs HAProxy vs nginx, each a separate process with one worker, in one run.
//!
//! `cargo bench --bench ttfb` (full: 3 rounds) or `cargo bench --bench ttfb -- --quick`.
//! The upstream, built into the bench, greets each connection `--delay-ms` (5) after it
//! accepts it (as a server that forks, authenticates or does a TLS handshake first would),
//! then echoes. A session connects through the proxy, and its time to first byte is from
//! just before `connect` to the first byte of the greeting; it then reads the rest of the
//! greeting, checks it, sends a few bytes, checks their echo and closes.
//! - sequential: `--clients` (200) sessions one after another, `--gap-ms` (2) apart;
//! - concurrent: `--bursts` (10) bursts of `--burst` (16) sessions started together,
//!   `--burst-gap-ms` (20) apart.
//!
//! Per round, proxy and scenario: a fresh proxy, one untimed session, 300 ms to settle
//! (sssonector's pool fills), then the sessions. The report gives the median across rounds
//! of each round's median and p99, the ratios to the peers, the goal of issue 6 (median
//! <= 0.1x and p99 <= 0.3x the better peer), and the share of sessions whose first byte
//! came sooner than the upstream's delay (served by a connection dialled before they came). Printed, and written as markdown to
//! `<target dir>/bench-ttfb.md`. A session that fails makes that measurement `failed`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sssonector_bench::args::{number_arg, quick};
use sssonector_bench::peers::{columns, free_port, round_order, setup, Proxy, Route, Setup};
use sssonector_bench::report::{
    better_peer, column_stats, lineup_cells, lineup_headers, machine, markdown_table, median_of,
    print_table, raw_cell, Measured,
};

const GREETING: &[u8; 32] = b"220 slow-greeting upstream ok\r\n\n";
const PROBE: &[u8] = b"ping ttfb";
/// Bounds every connect and read, so a proxy that drops a session fails it, not the run.
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);
/// After the untimed first session, for every proxy alike: sssonector's pool fills.
const SETTLE: Duration = Duration::from_millis(300);

struct Params {
    quick: bool,
    rounds: usize,
    greeting_delay: Duration,
    sequential_clients: usize,
    gap: Duration,
    burst: usize,
    bursts: usize,
    burst_gap: Duration,
    max_idle: usize,
}

/// Unknown arguments (cargo bench's own `--bench`) are ignored on purpose.
fn parse_args(args: &[String]) -> Result<Params, String> {
    let quick = quick(args);
    let ms = |name: &str, default: u64| -> Result<Duration, String> {
        Ok(Duration::from_millis(
            number_arg(args, name, 0)?.map_or(default, |n| n as u64),
        ))
    };
    Ok(Params {
        quick,
        rounds: number_arg(args, "--rounds", 1)?.unwrap_or(if quick { 1 } else { 3 }),
        greeting_delay: ms("--delay-ms", 5)?,
        sequential_clients: number_arg(args, "--clients", 1)?.unwrap_or(if quick {
            50
        } else {
            200
        }),
        gap: ms("--gap-ms", 2)?,
        burst: number_arg(args, "--burst", 1)?.unwrap_or(16),
        bursts: number_arg(args, "--bursts", 1)?.unwrap_or(if quick { 3 } else { 10 }),
        burst_gap: ms("--burst-gap-ms", 20)?,
        max_idle: number_arg(args, "--max-idle", 0)?.unwrap_or(16),
    })
}

// ---------------------------------------------------------------------------------------------
// The slow-greeting upstream
// ---------------------------------------------------------------------------------------------

/// Greets each connection `delay` after accepting it, then echoes. Connections are served
/// by threads started up front (one per connection at a time), so the pool's replacement
/// dials during a burst cost the shared cores no thread spawn, as a server on another
/// machine would; and the delay is a thread's sleep, precise to tens of microseconds
/// (a tokio timer would round it up to the next millisecond).
struct SlowGreeter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Connections the greeter serves at once: the pool, a burst, and their replacements.
const GREETER_THREADS: usize = 256;

impl SlowGreeter {
    fn start(delay: Duration) -> io::Result<SlowGreeter> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = std::sync::mpsc::channel::<(TcpStream, Instant)>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut threads = Vec::new();
        for _ in 0..GREETER_THREADS {
            let rx = rx.clone();
            threads.push(std::thread::Builder::new().stack_size(64 * 1024).spawn(
                move || loop {
                    let next = rx.lock().map(|r| r.recv());
                    match next {
                        Ok(Ok((conn, accepted))) => greet_then_echo(conn, accepted + delay),
                        _ => return,
                    }
                },
            )?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // The accept thread owns the only sender: when it ends, the serving threads'
        // `recv` fails and they end too (once their connections are closed).
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if tx.send((conn, Instant::now())).is_err() {
                    return;
                }
            }
        }));
        Ok(SlowGreeter {
            addr,
            stop,
            threads,
        })
    }
}

fn greet_then_echo(mut conn: TcpStream, greet_at: Instant) {
    std::thread::sleep(greet_at.saturating_duration_since(Instant::now()));
    let _ = conn.set_nodelay(true);
    if conn.write_all(GREETING).is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        if conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Drop for SlowGreeter {
    fn drop(&mut self) {
        // The accept thread sees the flag on its next connection, which this connect makes.
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

/// One new session through the proxy at `addr`; its time to first byte.
fn session(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let mut conn =
        TcpStream::connect_timeout(&addr, SESSION_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(SESSION_TIMEOUT))
        .and_then(|()| conn.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    let mut greeting = [0u8; GREETING.len()];
    let first = conn
        .read(&mut greeting)
        .map_err(|e| format!("waiting for the greeting: {e}"))?;
    let ttfb = start.elapsed();
    if first == 0 {
        return Err("closed before the greeting".into());
    }
    conn.read_exact(&mut greeting[first..])
        .map_err(|e| format!("reading the greeting: {e}"))?;
    if &greeting != GREETING {
        return Err(format!(
            "wrong greeting: {:?}",
            String::from_utf8_lossy(&greeting)
        ));
    }
    conn.write_all(PROBE)
        .map_err(|e| format!("sending after the greeting: {e}"))?;
    let mut echo = [0u8; PROBE.len()];
    conn.read_exact(&mut echo)
        .map_err(|e| format!("reading the echo: {e}"))?;
    if echo != PROBE {
        return Err(format!("wrong echo: {:?}", String::from_utf8_lossy(&echo)));
    }
    Ok(ttfb)
}

fn sequential(addr: SocketAddr, p: &Params) -> Vec<Result<Duration, String>> {
    (0..p.sequential_clients)
        .map(|_| {
            let r = session(addr);
            std::thread::sleep(p.gap);
            r
        })
        .collect()
}

/// `p.burst` threads, released together for each burst; the next burst starts `burst_gap`
/// after the slowest session of the last one ended.
fn concurrent(addr: SocketAddr, p: &Params) -> Vec<Result<Duration, String>> {
    let start = Arc::new(Barrier::new(p.burst + 1));
    let done = Arc::new(Barrier::new(p.burst + 1));
    let bursts = p.bursts;
    let clients: Vec<JoinHandle<Vec<Result<Duration, String>>>> = (0..p.burst)
        .map(|_| {
            let (start, done) = (start.clone(), done.clone());
            std::thread::spawn(move || {
                (0..bursts)
                    .map(|_| {
                        start.wait();
                        let r = session(addr);
                        done.wait();
                        r
                    })
                    .collect()
            })
        })
        .collect();
    for _ in 0..bursts {
        start.wait();
        done.wait();
        std::thread::sleep(p.burst_gap);
    }
    clients
        .into_iter()
        .flat_map(|c| {
            c.join()
                .unwrap_or_else(|_| vec![Err("client thread panicked".into())])
        })
        .collect()
}

/// Nearest-rank quantile of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Clone, Copy)]
enum Scenario {
    Sequential,
    Concurrent,
}

/// One scenario's sessions on one proxy.
struct Ttfb {
    p50_ms: f64,
    p99_ms: f64,
    /// Sessions whose first byte came sooner than the upstream greets a new connection:
    /// they were given a connection dialled before they came (a pool hit).
    early_pct: f64,
}

/// One scenario on a fresh proxy; the first failure otherwise.
fn measure(
    proxy: &Proxy,
    dir: &Path,
    up: &SlowGreeter,
    scenario: Scenario,
    p: &Params,
) -> Result<Ttfb, String> {
    let port = free_port().map_err(|e| format!("cannot pick a port: {e}"))?;
    let route = Route {
        name: "greeter",
        port,
        upstream: up.addr,
    };
    let pool = format!("  pool:\n    max_idle: {}\n", p.max_idle);
    let mut proc = proxy.start(dir, &[route], &pool)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    session(addr).map_err(|e| format!("first (untimed) session: {e}"))?;
    std::thread::sleep(SETTLE);
    let results = match scenario {
        Scenario::Sequential => sequential(addr, p),
        Scenario::Concurrent => concurrent(addr, p),
    };
    if let Some(died) = proc.exited() {
        return Err(died);
    }
    let total = results.len();
    let mut failures = results.iter().filter_map(|r| r.as_ref().err());
    if let Some(first) = failures.next() {
        return Err(format!(
            "{} of {total} sessions failed; first: {first}",
            failures.count() + 1
        ));
    }
    let mut ttfb: Vec<Duration> = results.into_iter().filter_map(Result::ok).collect();
    ttfb.sort();
    let early = ttfb.iter().filter(|t| **t < p.greeting_delay).count();
    Ok(Ttfb {
        p50_ms: ms(quantile(&ttfb, 0.5)),
        p99_ms: ms(quantile(&ttfb, 0.99)),
        early_pct: early as f64 * 100.0 / total as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// Rounds and report
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ScenarioResults {
    p50_ms: Measured,
    p99_ms: Measured,
    early_pct: Measured,
}

impl ScenarioResults {
    fn store(&mut self, measured: Result<Ttfb, String>) {
        match measured {
            Ok(t) => {
                self.p50_ms = Some(Ok(t.p50_ms));
                self.p99_ms = Some(Ok(t.p99_ms));
                self.early_pct = Some(Ok(t.early_pct));
            }
            Err(e) => {
                self.p50_ms = Some(Err(e.clone()));
                self.p99_ms = Some(Err(e.clone()));
                self.early_pct = Some(Err(e));
            }
        }
    }
}

#[derive(Default)]
struct Results {
    sequential: ScenarioResults,
    concurrent: ScenarioResults,
}

struct Metric {
    label: &'static str,
    /// Issue 6's goal for sssonector ÷ the better peer; `None`: no ratios for this row.
    goal: Option<f64>,
    decimals: usize,
    get: fn(&Results) -> &Measured,
}

const METRICS: &[Metric] = &[
    Metric {
        label: "sequential TTFB median (ms)",
        goal: Some(0.1),
        decimals: 2,
        get: |r| &r.sequential.p50_ms,
    },
    Metric {
        label: "sequential TTFB p99 (ms)",
        goal: Some(0.3),
        decimals: 2,
        get: |r| &r.sequential.p99_ms,
    },
    Metric {
        label: "sequential: TTFB < greeting delay (% of sessions)",
        goal: None,
        decimals: 0,
        get: |r| &r.sequential.early_pct,
    },
    Metric {
        label: "concurrent TTFB median (ms)",
        goal: Some(0.1),
        decimals: 2,
        get: |r| &r.concurrent.p50_ms,
    },
    Metric {
        label: "concurrent TTFB p99 (ms)",
        goal: Some(0.3),
        decimals: 2,
        get: |r| &r.concurrent.p99_ms,
    },
    Metric {
        label: "concurrent: TTFB < greeting delay (% of sessions)",
        goal: None,
        decimals: 0,
        get: |r| &r.concurrent.early_pct,
    },
];

fn run_rounds(proxies: &[Proxy], dir: &Path, up: &SlowGreeter, p: &Params) -> Vec<Vec<Results>> {
    let mut all: Vec<Vec<Results>> = proxies.iter().map(|_| Vec::new()).collect();
    for round in 0..p.rounds {
        for rounds in &mut all {
            rounds.push(Results::default());
        }
        let order = round_order(proxies.len(), round);
        for scenario in [Scenario::Sequential, Scenario::Concurrent] {
            for &i in &order {
                let proxy = &proxies[i];
                let sub = dir.join(proxy.name);
                let measured = fs::create_dir_all(&sub)
                    .map_err(|e| format!("cannot create {}: {e}", sub.display()))
                    .and_then(|()| measure(proxy, &sub, up, scenario, p));
                let tag = format!("[{}/{}] [{}]", round + 1, p.rounds, proxy.name);
                let what = match scenario {
                    Scenario::Sequential => "sequential",
                    Scenario::Concurrent => "concurrent",
                };
                match &measured {
                    Ok(t) => eprintln!(
                        "{tag} {what}: TTFB median {:.3} ms, p99 {:.3} ms, {:.0}% before the \
                         upstream's delay",
                        t.p50_ms, t.p99_ms, t.early_pct
                    ),
                    Err(e) => eprintln!("{tag} {what}: failed: {e}"),
                }
                let Some(r) = all[i].last_mut() else { continue };
                match scenario {
                    Scenario::Sequential => r.sequential.store(measured),
                    Scenario::Concurrent => r.concurrent.store(measured),
                }
            }
        }
    }
    all
}

/// Rows of cells, header first: every proxy's column, the ratios of each sssonector
/// variant to the peers, and, for each variant, whether it meets issue 6's goal.
fn table(proxies: &[Proxy], results: &[Vec<Results>]) -> Vec<Vec<String>> {
    let cols = columns();
    let ours: Vec<usize> = (0..cols.len())
        .filter(|&i| cols[i].kind.is_ours())
        .collect();
    let mut header = vec!["metric".to_string()];
    header.extend(lineup_headers(&cols));
    header.extend(ours.iter().map(|&i| match i {
        0 => "goal".to_string(),
        _ => format!("{} goal", cols[i].short),
    }));
    let mut rows = vec![header];
    for m in METRICS {
        let stats = column_stats(&cols, |name| {
            let i = proxies.iter().position(|p| p.name == name)?;
            Some(results[i].iter().map(|r| (m.get)(r)).collect())
        });
        let mut row = vec![m.label.to_string()];
        row.extend(lineup_cells(
            &cols,
            &stats,
            m.decimals,
            false,
            m.goal.is_some(),
        ));
        let better = better_peer(&cols, &stats, false);
        for &i in &ours {
            row.push(match m.goal {
                Some(goal) => {
                    let verdict = match (median_of(&stats[i]), better) {
                        (Some(a), Some(b)) if b > 0.0 && a / b <= goal => "met",
                        (Some(_), Some(_)) => "not met",
                        _ => "-",
                    };
                    format!("<= {goal:.1}x: {verdict}")
                }
                None => "-".into(),
            });
        }
        rows.push(row);
    }
    rows
}

fn mode_line(p: &Params) -> String {
    format!(
        "Mode: {}, {} round{}; upstream greets {:?} after accept; sequential: {} sessions {:?} \
         apart; concurrent: {} bursts of {} sessions, {:?} apart; sssonector max_idle {}.",
        if p.quick { "quick" } else { "full" },
        p.rounds,
        if p.rounds == 1 { "" } else { "s" },
        p.greeting_delay,
        p.sequential_clients,
        p.gap,
        p.bursts,
        p.burst,
        p.burst_gap,
        p.max_idle
    )
}

const NOTE: &str = "Cells are the median across rounds of each round's value (min–max in \
    parentheses). TTFB: lower is better; ratios are sssonector ÷ peer of those medians. The % \
    rows count sessions that got their first byte sooner than the upstream greets a new \
    connection, i.e. through a connection dialled before they came.";

fn markdown(
    rows: &[Vec<String>],
    proxies: &[Proxy],
    results: &[Vec<Results>],
    p: &Params,
) -> String {
    let mut md = String::from("# New-session time to first byte, slow-greeting upstream\n\n");
    let _ = writeln!(md, "{}\n\nMachine: {}\n", mode_line(p), machine());
    for proxy in proxies {
        let _ = writeln!(md, "- {}: {}", proxy.name, proxy.version);
    }
    md.push('\n');
    markdown_table(&mut md, rows, 1);
    let _ = writeln!(md, "\n{NOTE}\n\n## Per round\n");
    let mut header = vec!["metric".to_string(), "proxy".to_string()];
    header.extend((1..=p.rounds).map(|r| format!("round {r}")));
    let mut per_round = vec![header];
    let mut failures = String::new();
    for m in METRICS {
        for (proxy, rs) in proxies.iter().zip(results) {
            let mut row = vec![m.label.to_string(), proxy.name.to_string()];
            row.extend(rs.iter().map(|r| raw_cell((m.get)(r), m.decimals)));
            per_round.push(row);
            for (round, r) in rs.iter().enumerate() {
                if let Some(Err(e)) = (m.get)(r) {
                    let _ = writeln!(
                        failures,
                        "- round {} / {} / {}: {e}",
                        round + 1,
                        proxy.name,
                        m.label
                    );
                }
            }
        }
    }
    markdown_table(&mut md, &per_round, 2);
    if !failures.is_empty() {
        let _ = write!(md, "\n## Failures\n\n{failures}");
    }
    md
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let params = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-ttfb: {e}");
            std::process::exit(2);
        }
    };
    let Setup {
        ci: _,
        target_dir,
        work,
        proxies,
    } = setup(
        "bench-ttfb",
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        Path::new(env!("CARGO_BIN_EXE_sssonector")),
    );
    let upstream = match SlowGreeter::start(params.greeting_delay) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("bench-ttfb: cannot start the upstream: {e}");
            std::process::exit(1);
        }
    };

    eprintln!("bench-ttfb: {}", mode_line(&params));
    let started = Instant::now();
    let results = run_rounds(&proxies, &work, &upstream, &params);
    eprintln!(
        "bench-ttfb: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let rows = table(&proxies, &results);
    println!("\n{}\nMachine: {}", mode_line(&params), machine());
    for p in &proxies {
        println!("  {}: {}", p.name, p.version);
    }
    println!();
    print_table(&rows);
    println!("\n{NOTE}");
    let out = target_dir.join("bench-ttfb.md");
    match fs::write(&out, markdown(&rows, &proxies, &results, &params)) {
        Ok(()) => println!("written to {}", out.display()),
        Err(e) => eprintln!("bench-ttfb: cannot write {}: {e}", out.display()),
    }
}
