//! Upstream faults, each with the client's outcome asserted, and after each one the
//! proxy back at its baseline (this process's fds, table entries, slots in use, waiters,
//! warm pool). One test at a time ([`serial`]): fd counts are per process.
//!
//! The RST after a response delivered whole to a *slow* client, in every send mode, is
//! `tests/close_without_loss.rs`; here the same fault runs for the leak check.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// No warm pool (a hostile upstream would make its keeper redial without end), no
/// retries, no prober (its connects come and go in the fd count).
const HOSTILE: &str =
    "  pool:\n    enabled: false\n    max_retries: 0\n  health_check:\n    enabled: false\n";

/// A listener whose accept queue is full, so the kernel drops further SYNs: a connect to
/// it neither succeeds nor is refused. Returns the listener and the connections that
/// fill its queue (both must stay alive).
pub fn syn_black_hole() -> (TcpListener, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    s.bind(&addr.into()).expect("bind");
    s.listen(0).expect("listen");
    let listener: TcpListener = s.into();
    let addr = listener.local_addr().expect("addr");
    let mut fill = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
        assert!(fill.len() < 64, "the accept queue never filled");
    }
    (listener, fill)
}

#[test]
fn connect_timeout_is_honoured_when_the_upstream_never_answers_a_syn() {
    let _one = serial();
    let (hole, _fill) = syn_black_hole();
    let proxy = start_proxy_with(
        &[&[hole.local_addr().expect("addr")]],
        1,
        "  pool:\n    enabled: false\n    connect_timeout: 400ms\n    max_retries: 0\n  health_check:\n    enabled: false\n",
    );
    let base = Baseline::record(&proxy);
    let started = Instant::now();
    let mut c = connect_timed(proxy.addr()).expect("connect");
    let r = c.read(&mut [0u8; 8]);
    let took = started.elapsed();
    assert!(matches!(r, Ok(0)) || r.is_err(), "closed: {r:?}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "closed after the connect timeout: {took:?}"
    );
    let s = proxy.wait_for("timeout counted", |s| {
        s.total.upstream_connect_timeouts == 1 && s.total.sessions_active == 0
    });
    assert_eq!(s.total.connection_failures, 1);
    drop(c);
    base.assert_back(&proxy, "SYN never answered");
    proxy.stop();
}

/// The client is closed, with nothing sent to it, soon after connecting.
fn assert_closed_empty(c: &mut TcpStream, case: &str) {
    let started = Instant::now();
    let _ = c.write_all(b"hello");
    let (got, end) = read_all(c);
    assert!(got.is_empty(), "{case}: the client got {} bytes", got.len());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{case}: closed ({end}) only after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_refusing_upstream_closes_the_client_at_once() {
    let _one = serial();
    let proxy = start_proxy_with(&[&[closed_port()]], 1, HOSTILE);
    let base = Baseline::record(&proxy);
    for _ in 0..5 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        assert_closed_empty(&mut c, "refused");
    }
    let s = proxy.wait_for("5 failures", |s| s.total.connection_failures == 5);
    assert_eq!(s.total.upstream_connect_errors, 5);
    base.assert_back(&proxy, "refused");
    proxy.stop();
}

#[test]
fn an_upstream_that_accepts_then_resets_closes_the_client() {
    let _one = serial();
    let up = Upstream::start(|conn| reset(&conn));
    let proxy = start_proxy_with(&[&[up.addr]], 1, HOSTILE);
    let base = Baseline::record(&proxy);
    for _ in 0..5 {
        // The proxy passes the upstream's reset on at once: it may reach the client
        // before the connect has been confirmed, which then reports the reset itself.
        match connect_timed(proxy.addr()) {
            Ok(mut c) => assert_closed_empty(&mut c, "accept then RST"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect: {e}"),
        }
    }
    proxy.wait_for("5 sessions closed", |s| {
        s.total.sessions_closed == 5 && s.total.sessions_active == 0
    });
    assert_eq!(up.accepted(), 5, "every client got its own dial");
    base.assert_back(&proxy, "accept then RST");
    proxy.stop();
}

#[test]
fn a_reset_after_a_response_delivers_the_response_first() {
    const N: usize = 300_000;
    let _one = serial();
    let up = Upstream::start(|mut conn| {
        let mut req = [0u8; 5];
        if conn.read_exact(&mut req).is_err() {
            return;
        }
        let mut body = vec![0u8; N];
        Pattern::new(12).fill(&mut body);
        if conn.write_all(&body).is_ok() {
            wait_sent(&conn);
            reset(&conn);
        }
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, HOSTILE);
    let base = Baseline::record(&proxy);
    let mut expect = vec![0u8; N];
    Pattern::new(12).fill(&mut expect);
    for round in 0..5 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        c.write_all(b"hello").expect("request");
        let (got, end) = read_all(&mut c);
        assert_eq!(got.len(), N, "round {round}: the whole response ({end})");
        assert!(got == expect, "round {round}: byte-exact");
    }
    proxy.wait_for("closed", |s| s.total.sessions_closed == 5);
    base.assert_back(&proxy, "RST after a response");
    proxy.stop();
}

/// The upstream reads a little, answers `bye` and closes while the client keeps
/// sending: the client gets `bye` and the end of the stream, and its sending stops with
/// an error instead of blocking.
#[test]
fn an_upstream_that_closes_while_the_client_sends() {
    let _one = serial();
    let up = Upstream::start(|mut conn| {
        let mut first = [0u8; 1000];
        if conn.read_exact(&mut first).is_ok() && conn.write_all(b"bye").is_ok() {
            wait_sent(&conn);
        }
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, HOSTILE);
    let base = Baseline::record(&proxy);
    for round in 0..3 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        let mut w = c.try_clone().expect("clone");
        let sender = std::thread::spawn(move || {
            let chunk = vec![7u8; 16 * 1024];
            let mut sent = 0usize;
            loop {
                match w.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => return (sent, e.kind()),
                }
                if sent > 512 << 20 {
                    return (sent, std::io::ErrorKind::Other);
                }
            }
        });
        let (got, end) = read_all(&mut c);
        assert_eq!(got, b"bye", "round {round}: the answer, then {end}");
        let (sent, why) = sender.join().expect("sender");
        assert!(
            matches!(
                why,
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "round {round}: sending stopped by {why:?} after {sent} bytes"
        );
    }
    proxy.wait_for("closed", |s| s.total.sessions_closed == 3);
    base.assert_back(&proxy, "closed while the client sends");
    proxy.stop();
}

/// The upstream accepts and never reads. The client's sending stalls (the proxy holds
/// at most `max_in_flight` buffers for that direction, so its memory is bounded), other
/// sessions are served meanwhile, and once the upstream goes everything is released.
#[test]
fn an_upstream_that_never_reads_bounds_memory() {
    let _one = serial();
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let sink = Upstream::start(move |conn| {
        while !r.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(conn);
    });
    let echo = Upstream::echo();
    let proxy = start_proxy_with(&[&[sink.addr], &[echo.addr]], 1, HOSTILE);
    let base = Baseline::record(&proxy);
    let mut c = connect_timed(proxy.addrs[0]).expect("connect");
    c.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let chunk = vec![1u8; 64 * 1024];
    let mut sent = 0usize;
    let stalled = loop {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break e.kind(),
        }
        assert!(sent < 256 << 20, "256 MiB accepted: nothing bounds it");
    };
    assert!(
        matches!(
            stalled,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the client's sending stalls: {stalled:?}"
    );
    let held = proxy.stats().total.buffer_slots_in_use;
    assert!(held <= 4, "{held} slots held (max_in_flight 4)");
    for i in 0..5 {
        let took = echo_round_trip(proxy.addrs[1], 256 * 1024, i).expect("other session");
        assert!(took < Duration::from_secs(5), "other session took {took:?}");
    }
    // Still stalled a second later, and no more held.
    let more = c.write(&chunk);
    assert!(more.is_err(), "still stalled: {more:?}");
    let s = proxy.stats();
    assert!(s.total.buffer_slots_in_use <= 4, "{s:#?}");
    eprintln!(
        "never-reading upstream: the client got {sent} bytes in before stalling; {} slots held",
        s.total.buffer_slots_in_use
    );
    release.store(true, Ordering::Release);
    drop(c);
    proxy.wait_for("closed", |s| s.total.sessions_closed == 6);
    base.assert_back(&proxy, "upstream never reads");
    proxy.stop();
}

/// The upstream is killed (stops listening, every connection closed, pooled ones
/// included) and started again on the same port: clients during the outage are closed,
/// not hung, and new sessions recover without restarting the proxy.
#[test]
fn an_upstream_killed_and_restarted_recovers_without_a_proxy_restart() {
    let _one = serial();
    let mut up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 4\n    retry_interval: 200ms\n    max_retries: 1\n  health_check:\n    enabled: false\n",
    );
    proxy.wait_for("pool warm", |s| s.pool.idle == 4);
    let base = Baseline::record(&proxy);
    echo_round_trip(proxy.addr(), 100_000, 1).expect("before the kill");

    up.stop_accepting();
    up.close_open();
    for _ in 0..3 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        assert_closed_empty(&mut c, "upstream down");
    }
    up.resume_accepting();
    let back = Instant::now();
    let mut seed = 100;
    while echo_round_trip(proxy.addr(), 100_000, seed).is_err() {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "no recovery 20 s after the restart"
        );
        seed += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = back.elapsed();
    for i in 0..20 {
        echo_round_trip(proxy.addr(), 100_000, 1000 + i).expect("every session after the recovery");
    }
    eprintln!("killed and restarted: recovered {recovered:?} after the restart");
    base.assert_back(&proxy, "killed and restarted");
    proxy.stop();
}
