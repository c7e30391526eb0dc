//! Connection management (the spec's pool and health-check keys): warm use-once pool,
//! blocking admission, retries, sweeps, health checks, balancing. Upstreams on
//! 127.0.0.1:0 count what they accept and what is still open.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sssonector::upstream::Discard;
use support::*;

/// Reads one line-ish reply (up to 256 bytes) with a timeout.
fn read_some(c: &mut TcpStream, timeout: Duration) -> std::io::Result<Vec<u8>> {
    c.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 256];
    let n = c.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn echo_once(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

#[test]
fn warm_pool_holds_exactly_max_idle_and_refills() {
    for workers in [1, 2] {
        for max_idle in [1, 5, 20] {
            let up = Upstream::echo();
            let proxy = start_proxy_with(
                &[&[up.addr]],
                workers,
                &format!("  pool:\n    max_idle: {max_idle}\n"),
            );
            eventually("pool warm", || up.open() == max_idle);
            proxy.wait_for("pool counted", |s| s.pool.idle == max_idle as u64);
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                up.accepted(),
                max_idle,
                "never more than max_idle ({workers} workers)"
            );
            // Take N: the pool refills to max_idle while the N stay in use.
            let n = 3;
            let mut clients: Vec<TcpStream> = (0..n)
                .map(|_| TcpStream::connect(proxy.addr()).unwrap())
                .collect();
            for c in &mut clients {
                echo_once(c, b"ping");
            }
            eventually("refilled", || up.open() == max_idle + n);
            // Counters are published on the worker's tick: wait until the three
            // sessions are in them, or the pool figure is the one from before.
            let s = proxy.wait_for("pool refilled", |s| {
                s.total.sessions_total == n as u64 && s.pool.idle == max_idle as u64
            });
            assert_eq!(s.total.pool_hits + s.total.pool_misses, n as u64, "{s:#?}");
            // With one worker the whole pool is its share, so the first client is a
            // hit. With two, max_idle 1 gives one worker no share, and the kernel may
            // hand all three clients to that one.
            if workers == 1 || max_idle >= workers {
                assert!(s.total.pool_hits >= 1, "{s:#?}");
            }
            drop(clients);
            proxy.stop();
        }
    }
}

#[test]
fn a_client_takes_a_warm_connection_without_a_new_connect() {
    // The upstream tells each connection how long it waited for its first byte.
    let up = Upstream::start(|mut conn| {
        let accepted = Instant::now();
        let mut buf = [0u8; 64];
        if let Ok(n) = conn.read(&mut buf) {
            if n > 0 {
                let _ = conn.write_all(format!("{}", accepted.elapsed().as_millis()).as_bytes());
            }
        }
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, "  pool:\n    max_idle: 2\n");
    eventually("pool warm", || up.open() == 2);
    proxy.wait_for("pool counted", |s| s.pool.idle == 2);
    std::thread::sleep(Duration::from_millis(500));
    let accepted_before = up.accepted();
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    c.write_all(b"hi").unwrap();
    let waited: u128 = String::from_utf8(read_some(&mut c, Duration::from_secs(5)).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        waited >= 400,
        "the connection existed before the client came ({waited} ms)"
    );
    let s = proxy.wait_for("hit counted", |s| s.total.pool_hits == 1);
    assert_eq!(s.total.pool_misses, 0);
    // The only new connects are the refill, after the handoff.
    assert!(up.accepted() <= accepted_before + 1);
    proxy.stop();
}

#[test]
fn a_server_greeting_reaches_the_client_through_a_pooled_connection() {
    let up = Upstream::start(|mut conn| {
        let _ = conn.write_all(b"220 ready\r\n");
        echo_conn(conn);
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, "  pool:\n    max_idle: 1\n");
    proxy.wait_for("pool warm", |s| s.pool.idle == 1);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    let mut greeting = [0u8; 11];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 ready\r\n", "the banner comes first");
    echo_once(&mut c, b"HELO");
    let s = proxy.wait_for("hit", |s| s.total.pool_hits == 1);
    assert_eq!(
        s.total.pool_misses, 0,
        "it came through the pooled connection"
    );
    proxy.stop();
}

#[test]
fn dead_idle_connections_are_swept_and_never_handed_out() {
    let up = Upstream::echo();
    // A 1 s idle_timeout makes the sweep run every 100 ms; the pool keeps its target
    // thanks to the demand the clients below create.
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 4\n    idle_timeout: 10s\n",
    );
    proxy.wait_for("pool warm", |s| s.pool.idle == 4);
    // The upstream's own list must hold all four before it can close them; and they
    // must be older than the age under which a close means "never worth pooling".
    eventually("upstream holds the pool", || up.open() == 4);
    std::thread::sleep(Duration::from_millis(200));
    let accepted = up.accepted();
    up.close_open();
    // The next sweep notices and replaces them.
    let s = proxy.wait_for("dead ones removed and replaced", |s| {
        s.pool.dead() >= 4 && s.pool.idle == 4
    });
    assert!(up.accepted() >= accepted + 4, "{s:#?}");
    // Kill them again and come at once, before a sweep: the handoff check skips them.
    up.close_open();
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        echo_once(&mut c, b"still served");
    }
    let s = proxy.stats();
    assert_eq!(s.total.client_errors + s.total.upstream_errors, 0, "{s:#?}");
    proxy.stop();
}

#[test]
fn idle_timeout_expires_pooled_connections_and_inactive_sessions() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 3\n    idle_timeout: 1s\n  session:\n    idle_timeout: 1s\n",
    );
    eventually("pool warm", || up.open() == 3);
    // Unused, they expire, and with no demand nothing reopens them.
    eventually("expired", || up.open() == 0);
    let s = proxy.wait_for("expiry counted", |s| {
        s.pool.discarded(Discard::Expired) >= 3
    });
    assert_eq!(s.pool.idle, 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(up.accepted(), 3, "an unused pool does not churn");

    // A session quiet for idle_timeout is closed; one that talks is not.
    let mut quiet = TcpStream::connect(proxy.addr()).unwrap();
    let mut busy = TcpStream::connect(proxy.addr()).unwrap();
    let started = Instant::now();
    for _ in 0..8 {
        echo_once(&mut busy, b"tick");
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = read_some(&mut quiet, Duration::from_secs(3));
    assert!(
        matches!(r.as_deref(), Ok([])),
        "the quiet session was closed: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    echo_once(&mut busy, b"still here");
    let s = proxy.wait_for("timeout counted", |s| s.total.session_timeouts == 1);
    assert_eq!(s.total.session_timeouts, 1);
    proxy.stop();
}

#[test]
fn max_active_blocks_clients_and_serves_them_in_order() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_active: 10\n    max_idle: 5\n    queue_timeout: 30s\n",
    );
    let mut clients = Vec::new();
    for i in 0..25u8 {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        // Sent while possibly waiting: it must not be lost.
        c.write_all(&[b'a' + i; 4]).unwrap();
        clients.push(c);
        std::thread::sleep(Duration::from_millis(5));
    }
    proxy.wait_for("10 active, 15 waiting", |s| {
        s.admitted == 10 && s.queued == 15 && s.total.queued_total == 15
    });
    let mut buf = [0u8; 4];
    for (i, c) in clients.iter_mut().enumerate().take(10) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [b'a' + i as u8; 4]);
    }
    for c in clients.iter_mut().skip(10) {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            c.read(&mut buf).is_err(),
            "a waiting client is not served yet"
        );
    }
    // Each session that ends lets the next waiting client in, first come first served.
    let mut clients: std::collections::VecDeque<TcpStream> = clients.into();
    for i in 10..25usize {
        drop(clients.pop_front());
        let next = &mut clients[9];
        next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        next.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("client {i} served: {e}"));
        assert_eq!(
            buf,
            [b'a' + i as u8; 4],
            "client {i} got its own bytes back"
        );
        for later in clients.iter_mut().skip(10) {
            later
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            assert!(
                later.read(&mut buf).is_err(),
                "only one gets in per freed slot"
            );
        }
    }
    let s = proxy.wait_for("queue empty", |s| s.queued == 0);
    assert!(s.total.queue_wait_ms > 0);
    assert_eq!(s.total.queue_timeouts, 0);
    drop(clients);
    proxy.stop();
}

#[test]
fn a_client_waiting_past_the_queue_timeout_is_closed() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_active: 1\n    max_idle: 1\n    queue_timeout: 500ms\n",
    );
    let mut holder = TcpStream::connect(proxy.addr()).unwrap();
    echo_once(&mut holder, b"mine");
    let started = Instant::now();
    let mut waiter = TcpStream::connect(proxy.addr()).unwrap();
    let r = read_some(&mut waiter, Duration::from_secs(5));
    assert!(matches!(r.as_deref(), Ok([])), "closed: {r:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let s = proxy.wait_for("timeout counted", |s| {
        s.total.queue_timeouts == 1 && s.queued == 0
    });
    assert_eq!(s.admitted, 1);
    echo_once(&mut holder, b"unaffected");
    proxy.stop();
}

#[test]
fn a_refusing_endpoint_is_retried_at_retry_interval_then_the_client_is_closed() {
    let proxy = start_proxy_with(
        &[&[closed_port()]],
        1,
        "  pool:\n    enabled: false\n    max_retries: 3\n    retry_interval: 300ms\n  health_check:\n    enabled: false\n",
    );
    let started = Instant::now();
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    let r = read_some(&mut c, Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        matches!(r, Ok(ref b) if b.is_empty()) || r.is_err(),
        "closed: {r:?}"
    );
    // 1 + 3 attempts, 300 ms apart.
    assert!(
        took >= Duration::from_millis(900),
        "spaced by retry_interval: {took:?}"
    );
    // Well under the next multiple (4 spacings); the margin is for busy CI.
    assert!(took < Duration::from_millis(2000), "{took:?}");
    let s = proxy.wait_for("counted", |s| s.total.connection_failures == 1);
    assert_eq!(s.total.upstream_connect_errors, 4);
    assert_eq!(s.total.connect_retries, 3);
    proxy.stop();
}

#[test]
fn a_second_healthy_endpoint_serves_the_client_at_once() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[closed_port(), up.addr]],
        1,
        "  pool:\n    enabled: false\n    retry_interval: 5s\n  health_check:\n    enabled: false\n",
    );
    for _ in 0..4 {
        let started = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        echo_once(&mut c, b"hello");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no retry_interval wait"
        );
    }
    let s = proxy.wait_for("retries counted", |s| s.total.connect_retries >= 1);
    assert_eq!(s.total.connection_failures, 0);
    assert_eq!(up.accepted(), 4);
    proxy.stop();
}

#[test]
fn health_checks_mark_endpoints_down_flush_them_and_bring_them_back() {
    let a = Upstream::echo();
    let mut b = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[a.addr, b.addr]],
        1,
        // max_idle is the total over the endpoints: two each.
        "  pool:\n    max_idle: 4\n  health_check:\n    interval: 200ms\n    timeout: 100ms\n    rise: 2\n    fall: 2\n",
    );
    eventually("both pools warm", || a.open() >= 2 && b.open() >= 2);
    proxy.wait_for("pool", |s| s.pool.idle == 4);
    b.stop_accepting();
    let stopped = Instant::now();
    let s = proxy.wait_for("b marked down", |s| !s.endpoints[1].up);
    let took = stopped.elapsed();
    // (interval + timeout) x fall is 600 ms, plus a probe round in flight; the
    // defaults (10 s interval, fall 3) would take 30 s. The margin is for busy CI.
    assert!(
        took < Duration::from_millis(2500),
        "marked down after {took:?}"
    );
    assert!(s.endpoints[0].up);
    eventually("b's idle pool flushed", || b.open() == 0);
    let s = proxy.wait_for("flush counted", |s| s.pool.discarded(Discard::Flushed) >= 2);
    assert!(s.pool.discarded(Discard::Flushed) >= 2);
    let b_accepted = b.accepted();
    for _ in 0..6 {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        echo_once(&mut c, b"to a");
    }
    assert_eq!(
        b.accepted(),
        b_accepted,
        "new clients go to the healthy endpoint"
    );
    b.resume_accepting();
    proxy.wait_for("b back up", |s| s.endpoints[1].up);
    eventually("b's pool refilled", || b.open() == 2);
    proxy.stop();
}

#[test]
fn pool_disabled_dials_per_session_and_health_disabled_sends_no_probes() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    enabled: false\n  health_check:\n    enabled: false\n    interval: 100ms\n    timeout: 50ms\n",
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(up.accepted(), 0, "no warm connections, no probes");
    for i in 1..=3 {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        echo_once(&mut c, b"own connection");
        assert_eq!(up.accepted(), i);
    }
    let s = proxy.stats();
    assert_eq!(s.total.pool_hits + s.total.pool_dials, 0);
    proxy.stop();

    // With probes on, the upstream sees them.
    let probed = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[probed.addr]],
        1,
        "  pool:\n    enabled: false\n  health_check:\n    interval: 100ms\n    timeout: 50ms\n",
    );
    eventually("probes arrive", || probed.accepted() >= 3);
    proxy.stop();
}

#[test]
fn least_active_balances_by_active_sessions() {
    let a = Upstream::echo();
    let b = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[a.addr, b.addr]],
        1,
        "  pool:\n    enabled: false\n    balance: least_active\n  health_check:\n    enabled: false\n",
    );
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        echo_once(&mut c, b"x");
        held.push(c);
    }
    assert_eq!(
        (a.accepted(), b.accepted()),
        (3, 3),
        "spread by active count"
    );
    let s = proxy.stats();
    assert_eq!(
        s.endpoints.iter().map(|e| e.active).collect::<Vec<_>>(),
        [3, 3]
    );
    proxy.stop();
}

#[test]
fn upstream_connections_have_keepalive() {
    if !have_tool("ss", "iproute2") {
        return;
    }
    let up = Upstream::echo();
    let proxy = start_proxy_with(&[&[up.addr]], 1, "  pool:\n    max_idle: 2\n");
    proxy.wait_for("pool warm", |s| s.pool.idle == 2);
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "dst", &up.addr.to_string()])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let keepalive = text.lines().filter(|l| l.contains("keepalive")).count();
    assert_eq!(
        keepalive, 2,
        "keepalive timers on the upstream sockets:\n{text}"
    );
    proxy.stop();
}
