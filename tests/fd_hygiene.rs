//! No fd is left open: after sessions end in every way (clean close, half-close, refused
//! upstream, reset from either side, many at once) and after the proxy stops.
//! Its own test binary, one test: fd counts are per process.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

#[test]
fn sessions_and_shutdown_leave_no_fd_open() {
    // Before the baseline: the closed port's socket stays open for the whole process.
    let refused = closed_port();
    let before_all = open_fds();
    let echo = Upstream::echo();
    let resetter = Upstream::start(|mut conn| {
        let mut buf = [0u8; 5];
        if conn.read_exact(&mut buf).is_ok() {
            reset(&conn);
        }
    });
    // No retries: the refused client is closed at once. The warm pools of the two live
    // endpoints (10 each: max_idle is spread over the three) are part of the baseline:
    // sessions take from them, and they
    // are refilled.
    let proxy = start_proxy_with(
        &[&[echo.addr], &[resetter.addr], &[refused]],
        2,
        "  pool:\n    max_idle: 30\n    max_retries: 0\n",
    );
    let pools_full = |s: &sssonector::StatsSnapshot| s.pool.idle == 20;
    proxy.wait_for("warm pools filled", pools_full);
    // The pool's count is live; the upstreams' threads may still be accepting.
    eventually("upstreams hold the pools", || {
        echo.open() == 10 && resetter.open() == 10
    });
    let baseline = quiet_fds();

    // Clean close, half-close first, then many at once.
    for _ in 0..3 {
        let mut c = connect_timed(proxy.addrs[0]).unwrap();
        c.write_all(b"ping").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut c).unwrap(), b"ping");
    }
    let many: Vec<TcpStream> = (0..100)
        .map(|_| connect_timed(proxy.addrs[0]).unwrap())
        .collect();
    proxy.wait_for("100 open", |s| s.total.sessions_active == 100);
    drop(many);
    // The client resets.
    let mut c = connect_timed(proxy.addrs[0]).unwrap();
    c.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    reset(&c);
    drop(c);
    // The upstream resets.
    let mut c = connect_timed(proxy.addrs[1]).unwrap();
    c.write_all(b"hello").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(c.read(&mut [0u8; 8]).is_err());
    drop(c);
    // The upstream refuses.
    let mut c = connect_timed(proxy.addrs[2]).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(c.read(&mut [0u8; 8]), Ok(0) | Err(_)));
    drop(c);

    proxy.wait_for("all sessions closed, pools refilled", |s| {
        s.total.sessions_active == 0 && s.total.sessions_total == 106 && pools_full(s)
    });
    eventually("upstreams hold the refilled pools", || {
        echo.open() == 10 && resetter.open() == 10
    });
    assert_eq!(settle_fds(baseline), baseline, "sessions left fds open");
    proxy.stop();
    drop(echo);
    drop(resetter);
    assert_eq!(
        settle_fds(before_all),
        before_all,
        "the stopped proxy left fds open"
    );
}
