//! `connection.session.idle_timeout`: quiet sessions are closed by it alone, not by
//! `pool.idle_timeout` (which is for idle pooled connections), and `0` turns it off.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sssonector::upstream::Discard;
use support::*;

/// Sends `msg` and reads it back from the echo upstream, with a timeout.
fn echo_once(conn: &mut TcpStream, msg: &[u8]) {
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    conn.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).expect("echo comes back");
    assert_eq!(back, msg);
}

/// Waits up to `limit` for the proxy to close `conn`; how long it took, or None if it
/// stayed open.
fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Ok(0) => Some(started.elapsed()),
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        Err(_) => None,
    }
}

#[test]
fn quiet_session_survives_pool_idle_timeout() {
    let up = Upstream::echo();
    // pool.idle_timeout 1 s: idle pooled connections expire (and the sweep runs every
    // 100 ms); the session timeout is the default hour.
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 2\n    idle_timeout: 1s\n",
    );
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    echo_once(&mut conn, b"hello");
    // Quiet for two and a half pool idle timeouts.
    assert_eq!(closed_within(&mut conn, Duration::from_millis(2500)), None);
    echo_once(&mut conn, b"still here");
    let s = proxy.wait_for("pooled connections expired meanwhile", |s| {
        s.pool.discarded(Discard::Expired) >= 1
    });
    assert_eq!(s.total.session_timeouts, 0, "{s:#?}");
    proxy.stop();
}

#[test]
fn session_idle_timeout_closes_a_quiet_session_only() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 2\n  session:\n    idle_timeout: 1s\n",
    );
    let mut quiet = TcpStream::connect(proxy.addr()).expect("connect");
    let mut busy = TcpStream::connect(proxy.addr()).expect("connect");
    echo_once(&mut quiet, b"one message, then silence");
    let silent_since = Instant::now();
    let closer = std::thread::spawn(move || {
        closed_within(&mut quiet, Duration::from_secs(5)).map(|_| Instant::now())
    });
    for _ in 0..8 {
        echo_once(&mut busy, b"tick");
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = closer.join().expect("reader thread");
    let closed_at = after.expect("the quiet session was closed");
    // Not before the timeout, and within a sweep or two after it.
    let quiet_for = closed_at.duration_since(silent_since);
    assert!(
        quiet_for >= Duration::from_millis(900),
        "closed after {quiet_for:?}"
    );
    assert!(
        quiet_for < Duration::from_secs(3),
        "closed after {quiet_for:?}"
    );
    echo_once(&mut busy, b"the busy one is still open");
    let s = proxy.wait_for("timeout counted", |s| s.total.session_timeouts == 1);
    assert_eq!(s.total.session_timeouts, 1);
    proxy.stop();
}

#[test]
fn session_idle_timeout_zero_keeps_quiet_sessions_open() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 2\n    idle_timeout: 1s\n  session:\n    idle_timeout: 0\n",
    );
    let mut conn = TcpStream::connect(proxy.addr()).expect("connect");
    echo_once(&mut conn, b"hello");
    assert_eq!(closed_within(&mut conn, Duration::from_millis(2500)), None);
    echo_once(&mut conn, b"still here");
    let s = proxy.stats();
    assert_eq!(s.total.session_timeouts, 0, "{s:#?}");
    proxy.stop();
}
