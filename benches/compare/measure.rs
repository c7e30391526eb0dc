//! The compare bench's measurements: the upstreams, a fresh proxy per measurement, bulk, request/response and idle sessions, and the rounds that run them all.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sssonector_bench::peers::{free_port, round_order, Proxy, Route};
use sssonector_bench::processes::{cpu_ticks, process_tree, rss_kib, Proc};
use sssonector_bench::report::Measured;
use sssonector_loadgen::{
    self as loadgen, Bulk, BulkMode, RequestResponse, ServerKind, Upstream,
    BENCH_IDLE_SESSIONS as IDLE_SESSIONS, BENCH_RR_CONNECTIONS as RR_CONNECTIONS,
    BENCH_RR_PAYLOAD as RR_PAYLOAD,
};

use crate::cli::{Params, MIB};

/// The three listeners every proxy gets: to the echo, the sink and the source upstream.
pub struct Ports {
    echo: u16,
    sink: u16,
    source: u16,
}

pub struct Upstreams {
    pub echo: Upstream,
    pub sink: Upstream,
    pub source: Upstream,
}

impl Upstreams {
    pub fn start() -> io::Result<Upstreams> {
        Ok(Upstreams {
            echo: Upstream::start(ServerKind::Echo)?,
            sink: Upstream::start(ServerKind::Sink)?,
            source: Upstream::start(ServerKind::Source)?,
        })
    }
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

/// One round's numbers of one proxy.
#[derive(Default)]
pub struct Results {
    pub bulk_up: Measured,
    pub bulk_down: Measured,
    pub rr_rps: Measured,
    pub rr_p50_us: Measured,
    pub rr_p99_us: Measured,
    pub cpu_us_per_req: Measured,
    pub rss_per_session: Measured,
}

/// Every round's numbers of one proxy.
pub struct ProxyResults<'a> {
    pub proxy: &'a Proxy,
    pub rounds: Vec<Results>,
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
pub struct Bench<'a> {
    /// Work dir: one subdirectory per proxy for its configs and logs.
    pub dir: &'a Path,
    pub up: &'a Upstreams,
    pub params: &'a Params,
    /// Clock ticks per second, for /proc CPU times.
    pub hz: u64,
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
    let sub = b.dir.join(p.name);
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
pub fn run_rounds<'a>(proxies: &'a [Proxy], b: &Bench) -> Vec<ProxyResults<'a>> {
    let params = b.params;
    let mut all: Vec<ProxyResults> = proxies
        .iter()
        .map(|proxy| ProxyResults {
            proxy,
            rounds: (0..params.rounds).map(|_| Results::default()).collect(),
        })
        .collect();
    for round in 0..params.rounds {
        let order = round_order(proxies.len(), round);
        let names: Vec<&str> = order.iter().map(|&i| proxies[i].name).collect();
        eprintln!(
            "bench-compare: round {}/{}: {}",
            round + 1,
            params.rounds,
            names.join(", ")
        );
        for step in STEPS {
            for &i in &order {
                let p = &proxies[i];
                let tag = format!("[{}/{}] [{}]", round + 1, params.rounds, p.name);
                run_step(step, p, b, &tag, &mut all[i].rounds[round]);
            }
        }
    }
    all
}

fn report_line(tag: &str, what: &str, v: &Measured) {
    match v {
        Some(Ok(x)) => eprintln!("{tag}   {what}: {x:.1}"),
        Some(Err(e)) => eprintln!("{tag}   {what}: failed: {e}"),
        None => {}
    }
}
