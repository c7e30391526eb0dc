//! SIGTERM through the real binary: `/readyz` fails at once, listeners accept during
//! `shutdown.drain_delay` and refuse after it, every transfer in flight completes
//! byte-exact, and the process exits 0 within the grace period.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// One listener `web` in front of `upstream`, the admin server on a free port, and the
/// drain's two durations.
fn web_config(upstream: SocketAddr, workers: usize, drain_delay: &str, grace: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    upstreams: [{upstream}]\n\
         workers: {workers}\n\
         connection:\n  monitoring:\n    listen: 127.0.0.1:0\n\
         shutdown:\n  drain_delay: {drain_delay}\n  grace_period: {grace}\n"
    )
}

#[test]
fn sigterm_drains_transfers_in_flight_and_exits_0() {
    let echo = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let grace = Duration::from_secs(20);
    let mut proxy = BinaryProxy::start(
        &web_config(echo.addr, 2, "1s", &format!("{}s", grace.as_secs())),
        dir.path(),
    );
    let addr = proxy.addr_from_log("listening listener=web");
    let admin = proxy.addr_from_log("admin server listening");
    assert_eq!(http_get(admin, "/readyz").expect("readyz").0, 200);

    // 50 transfers of 64 chunks every 50 ms: about 3 s each, well past the delay.
    let transfers: Vec<_> = (0..50).map(|i| paced_transfer(addr, i + 1, 64)).collect();
    scrape_until(admin, "50 sessions", |s| {
        sample(s, "sssonector_pool_active_connections", "") == Some(50.0)
    });
    proxy.signal("-TERM");
    let signalled = Instant::now();
    // Within the delay (1 s) a new client is still served: it connects now, well inside.
    let late = paced_transfer(addr, 99, 2);
    // "At once": the first answer after the signal is normally already 503; the margin
    // is for a busy machine.
    let deadline = signalled + Duration::from_secs(3);
    loop {
        let (status, body) = http_get(admin, "/readyz").expect("readyz while draining");
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(late.join().expect("late transfer"), 2 * 16 * 1024);
    // After it (1 s, plus 1 s for the workers to act on a busy machine), nothing is
    // accepted.
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(signalled.elapsed()));
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(refused.is_err(), "a connect after the delay was accepted");
    // Liveness holds through the drain, for workers still relaying and finished ones.
    let (status, body) = http_get(admin, "/healthz").expect("healthz while draining");
    assert_eq!(status, 200, "{body}");

    for (i, t) in transfers.into_iter().enumerate() {
        let n = t.join().unwrap_or_else(|_| panic!("transfer {i} failed"));
        assert_eq!(n, 64 * 16 * 1024);
    }
    let status = proxy.wait_exit(grace);
    let log = proxy.log_text();
    let status = status.unwrap_or_else(|| panic!("still running after the grace period:\n{log}"));
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(signalled.elapsed() < grace, "{:?}", signalled.elapsed());
    assert!(log.contains("listeners closed"), "{log}");
    assert!(
        !log.contains("grace period"),
        "no session had to be cut:\n{log}"
    );
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let echo = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = BinaryProxy::start(&web_config(echo.addr, 1, "30s", "30s"), dir.path());
    let addr = proxy.addr_from_log("listening listener=web");
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    proxy.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal("-TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let log = proxy.log_text();
    let status = status.unwrap_or_else(|| panic!("a second SIGTERM did not stop it:\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
    let mut b = [0u8; 1];
    assert!(
        matches!(idle.read(&mut b), Ok(0) | Err(_)),
        "the session was closed"
    );
}

#[test]
fn json_logs_with_one_debug_line_per_session_close() {
    let echo = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = BinaryProxy::start_with(
        &web_config(echo.addr, 1, "0s", "5s"),
        dir.path(),
        &["--log-format", "json"],
        "sssonector=debug",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = loop {
        let line = proxy
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a listening line");
        proxy.log.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).expect("each line is JSON");
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("addr parses");
        }
    };
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"hello").expect("write");
    let mut b = [0u8; 5];
    c.read_exact(&mut b).expect("echo");
    let client = c.local_addr().expect("local addr").to_string();
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal("-TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let log = proxy.log_text();
    assert!(status.is_some_and(|s| s.success()), "{log}");
    let closes: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON"))
        .filter(|v| v["fields"]["message"] == "session closed")
        .collect();
    assert_eq!(closes.len(), 1, "{log}");
    assert_eq!(closes[0]["level"], "DEBUG");
    assert_eq!(closes[0]["fields"]["client"], client.as_str(), "{log}");
}

#[test]
fn sessions_left_after_the_grace_period_are_closed_and_the_exit_is_0() {
    let echo = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = BinaryProxy::start(&web_config(echo.addr, 1, "0s", "1s"), dir.path());
    let addr = proxy.addr_from_log("listening listener=web");
    // A session that never ends on its own.
    let mut held = TcpStream::connect(addr).expect("connect");
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    held.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    held.read_exact(&mut b).expect("echo");
    proxy.signal("-TERM");
    let signalled = Instant::now();
    let status = proxy.wait_exit(Duration::from_secs(10));
    let log = proxy.log_text();
    let status = status.unwrap_or_else(|| panic!("still running:\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "the session had its grace period: {:?}",
        signalled.elapsed()
    );
    assert!(log.contains("grace period of 1s over"), "{log}");
    assert!(
        matches!(held.read(&mut b), Ok(0) | Err(_)),
        "the session was closed"
    );
}
