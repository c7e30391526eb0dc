//! Overload: 8000 concurrent sessions on one worker, relayed byte-exact; `max_active`
//! reached under churn with none lost and the queue bounded.
//!
//! The 8000 sessions need about 16,000 fds in the proxy and 8000 in the echo upstream, so
//! the proxy runs as the binary and the upstream as a second process (this test binary
//! again, running only [`echo_child`]); this process holds the 8000 clients. Each stays
//! under the 20,000 hard `RLIMIT_NOFILE`. The tests of this binary run one at a time.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const SESSIONS: usize = 8000;
const PAYLOAD: usize = 4096;
const CHILD: &str = "SSSONECTOR_OVERLOAD_ECHO_CHILD";

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it);
/// returns the new soft limit.
fn raise_nofile() -> u64 {
    sssonector_loopback::raise_nofile(u64::MAX).expect("raise RLIMIT_NOFILE")
}

/// Not a test of its own: the echo upstream process of the 8000-session test. Does
/// nothing unless started by it (with [`CHILD`] set); then serves echo on 127.0.0.1:0,
/// prints `echo-addr=ADDR` and exits when its stdin closes.
#[test]
fn echo_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    raise_nofile();
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    // The project's echo upstream: one thread, a few KiB per connection.
    let echo = sssonector_loopback::Upstream::start(sssonector_loopback::ServerKind::Echo)
        .expect("echo upstream");
    println!("echo-addr={}", echo.addr());
    loop {
        std::thread::park();
    }
}

/// The echo child process; killed when dropped.
struct EchoChild(Child, SocketAddr);

impl EchoChild {
    fn start() -> EchoChild {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["echo_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the echo child");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let addr = out
            .lines()
            .map_while(Result::ok)
            // The harness writes `test echo_child ... ` before it on the same line.
            .find_map(|l| l.split("echo-addr=").nth(1)?.trim().parse().ok())
            .expect("the echo child prints its address");
        EchoChild(child, addr)
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `sssonector_pool_active_connections` (sessions with a client) from `/metrics`.
fn sessions(admin: SocketAddr) -> f64 {
    let (_, body) = http_get(admin, "/metrics").expect("scrape");
    sample(
        &parse_exposition(&body),
        "sssonector_pool_active_connections",
        "",
    )
    .expect("sessions gauge")
}

fn wait_sessions(admin: SocketAddr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sessions(admin);
        if s == n as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "{s} sessions, waiting for {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn eight_thousand_concurrent_sessions_on_one_worker_relay_byte_exact() {
    let _one = serial();
    let limit = raise_nofile();
    assert!(
        limit >= 2 * SESSIONS as u64 + 500,
        "RLIMIT_NOFILE hard limit {limit}: too low for {SESSIONS} sessions"
    );
    let echo = EchoChild::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "listeners:\n  - name: big\n    listen: 127.0.0.1:0\n    upstreams: [{}]\nworkers: 1\n\
         connection:\n  pool:\n    max_idle: 0\n    max_active: 10000\n  health_check:\n    enabled: false\n\
         \x20 monitoring:\n    listen: 127.0.0.1:0\n",
        echo.1
    );
    let mut proxy = BinaryProxy::start_with(
        &yaml,
        dir.path(),
        &[],
        "warn,sssonector::admin=info,sssonector::proxy=info",
    );
    let addr = proxy.addr_from_log("listening listener=big");
    let admin = proxy.addr_from_log("admin server listening");
    let pid = proxy.child.id();
    // The baseline once start-up is over: the signal and admin threads may still be
    // opening their fds just after the log lines (seen on a busy machine).
    let mut fds_before = proxy_fds(pid);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = proxy_fds(pid);
        if now == fds_before {
            break;
        }
        fds_before = now;
    }
    let started = Instant::now();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Connect all, 256 at a time (the listen backlog is bounded), and keep them open.
    let conns = rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(256));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..SESSIONS {
            let gate = gate.clone();
            set.spawn(async move {
                let _p = gate.acquire_owned().await.expect("gate");
                let c = tokio::time::timeout(IO_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| format!("connect {i}: timed out"))?
                    .map_err(|e| format!("connect {i}: {e}"))?;
                Ok::<_, String>((i, c))
            });
        }
        let mut conns = Vec::with_capacity(SESSIONS);
        while let Some(r) = set.join_next().await {
            conns.push(r.expect("task").unwrap_or_else(|e| panic!("{e}")));
        }
        conns
    });
    let connected = started.elapsed();
    wait_sessions(admin, SESSIONS);
    let peak_fds = proxy_fds(pid);

    // Every session at once: 4 KiB out, the same 4 KiB back, byte-exact.
    let exact = Arc::new(AtomicU64::new(0));
    let conns = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut set = tokio::task::JoinSet::new();
        for (i, mut c) in conns {
            let exact = exact.clone();
            set.spawn(async move {
                let mut body = vec![0u8; PAYLOAD];
                Pattern::new(i as u64).fill(&mut body);
                let mut back = vec![0u8; PAYLOAD];
                let io = async {
                    c.write_all(&body).await?;
                    c.read_exact(&mut back).await
                };
                match tokio::time::timeout(Duration::from_secs(60), io).await {
                    Ok(Ok(_)) if back == body => {
                        exact.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => panic!("session {i}: wrong bytes"),
                    Ok(Err(e)) => panic!("session {i}: {e}"),
                    Err(_) => panic!("session {i}: no echo in 60 s"),
                }
                c
            });
        }
        let mut kept = Vec::with_capacity(SESSIONS);
        while let Some(r) = set.join_next().await {
            kept.push(r.expect("session task"));
        }
        kept
    });
    let relayed = started.elapsed();
    assert_eq!(exact.load(Ordering::Relaxed), SESSIONS as u64);
    assert_eq!(
        sessions(admin),
        SESSIONS as f64,
        "all still open after the echo"
    );
    drop(conns);
    drop(rt);
    wait_sessions(admin, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy_fds(pid) != fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fds_after = proxy_fds(pid);
    eprintln!(
        "{SESSIONS} sessions: connected in {connected:?}, all echoed byte-exact by {relayed:?}; \
         proxy fds {fds_before} -> {peak_fds} at the peak -> {fds_after}"
    );
    assert_eq!(
        fds_after, fds_before,
        "the proxy's fds back after the close"
    );
    assert!(
        peak_fds >= fds_before + 2 * SESSIONS,
        "a client and an upstream fd per session: {peak_fds}"
    );
    let log = proxy.log_text();
    assert!(!log.contains("ERROR"), "{log}");
}

/// 40 clients churn (connect, 1 KiB echo, close) 25 times each through `max_active: 8`:
/// the limit is reached, every session is served byte-exact (none lost), no one is
/// rejected or timed out, and the queue never holds more than the clients waiting.
#[test]
fn max_active_under_churn_loses_nothing_and_bounds_the_queue() {
    const CLIENTS: u64 = 40;
    const EACH: u64 = 25;
    let _one = serial();
    let echo = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[echo.addr]],
        1,
        "  pool:\n    max_idle: 4\n    max_active: 8\n    max_queued: 64\n    queue_timeout: 30s\n  health_check:\n    enabled: false\n",
    );
    proxy.wait_for("pool warm", |s| s.pool.idle == 4);
    let base = Baseline::record(&proxy);
    let done = Arc::new(AtomicBool::new(false));
    let (max_admitted, max_queued) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watch = {
        let (done, ma, mq) = (done.clone(), max_admitted.clone(), max_queued.clone());
        let handle = proxy.handle.as_ref().expect("running").view();
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let s = handle.stats();
                ma.fetch_max(s.admitted, Ordering::Relaxed);
                mq.fetch_max(s.queued, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let addr = proxy.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let mut conn = connect_timed(addr).expect("connect");
                    let mut body = vec![0u8; 1024];
                    Pattern::new(c << 32 | i).fill(&mut body);
                    conn.write_all(&body).expect("request");
                    conn.shutdown(std::net::Shutdown::Write)
                        .expect("half-close");
                    let (got, end) = read_all(&mut conn);
                    assert!(got == body && end == "fin", "client {c} session {i}: {end}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every session served");
    }
    done.store(true, Ordering::Release);
    watch.join().expect("watcher");
    let s = proxy.wait_for("all closed", |s| {
        s.total.sessions_closed == CLIENTS * EACH && s.total.sessions_active == 0
    });
    let (ma, mq) = (
        max_admitted.load(Ordering::Relaxed),
        max_queued.load(Ordering::Relaxed),
    );
    eprintln!(
        "churn: {} sessions, {} queued on the way, peak admitted {ma}, peak queue {mq}",
        s.total.sessions_total, s.total.queued_total
    );
    assert_eq!(s.total.sessions_total, CLIENTS * EACH);
    assert_eq!((s.total.queue_rejected, s.total.queue_timeouts), (0, 0));
    assert!(s.total.queued_total > 0, "max_active was reached");
    assert!(ma <= 8, "admitted {ma} > max_active");
    assert!(mq <= CLIENTS - 8, "queue {mq} > the clients that can wait");
    base.assert_back(&proxy, "churn at max_active");
    proxy.stop();
}
