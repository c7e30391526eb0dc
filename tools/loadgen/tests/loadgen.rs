//! The load generator against its own upstreams, no proxy in between: counts and bytes must be exact.

use std::time::Duration;

use sssonector_loadgen::{self as loadgen, Bulk, BulkMode, RequestResponse, ServerKind, Upstream};

#[test]
fn request_response_counts_are_exact() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let mut cfg = RequestResponse::new(echo.addr(), 8, 64);
    cfg.requests = Some(5000);
    // The count should be reached well before this; the duration only bounds a slow machine.
    cfg.duration = Some(Duration::from_secs(20));
    cfg.timeout = Duration::from_secs(30);
    let r = loadgen::request_response(&cfg).expect("request/response run");
    assert_eq!(r.requests, 5000);
    assert_eq!(r.bytes_sent, 5000 * 64);
    assert_eq!(r.bytes_received, 5000 * 64);
    assert_eq!(r.latency.count, 5000);
    assert!(r.latency.p50 <= r.latency.p99 && r.latency.p99 <= r.latency.max);
    // What the echo server saw agrees with what the generator counted.
    let s = echo.stats();
    assert_eq!(
        s.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        5000 * 64
    );
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::Relaxed), 8);
}

#[test]
fn request_response_for_a_duration() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let mut cfg = RequestResponse::new(echo.addr(), 4, 64);
    cfg.duration = Some(Duration::from_secs(1));
    let r = loadgen::request_response(&cfg).expect("request/response run");
    assert!(r.requests > 0);
    assert!(r.elapsed >= Duration::from_secs(1) && r.elapsed < Duration::from_secs(5));
    assert_eq!(r.bytes_received, r.requests * 64);
    assert_eq!(r.latency.count, r.requests);
}

#[test]
fn bulk_counts_are_exact() {
    const N: u64 = 64 * 1024 * 1024 + 12_345; // not a multiple of the chunk size
    let sink = Upstream::start(ServerKind::Sink).expect("sink upstream");
    let r = loadgen::bulk(&Bulk::new(sink.addr(), BulkMode::Sink, N)).expect("sink bulk");
    assert_eq!(r.bytes_sent, N);
    assert_eq!(r.confirmed, Some(N));
    assert_eq!(r.transferred(), N);
    assert!(r.mib_per_sec() > 0.0);

    let source = Upstream::start(ServerKind::Source).expect("source upstream");
    let r = loadgen::bulk(&Bulk::new(source.addr(), BulkMode::Source, N)).expect("source bulk");
    assert_eq!(r.bytes_received, N);

    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let r = loadgen::bulk(&Bulk::new(echo.addr(), BulkMode::Echo, N)).expect("echo bulk");
    assert_eq!(r.bytes_sent, N);
    assert_eq!(r.bytes_received, N);
}

#[test]
fn idle_sessions_stay_open() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let socks =
        loadgen::idle_sessions(echo.addr(), 200, Duration::from_secs(20)).expect("sessions");
    assert_eq!(socks.len(), 200);
    assert_eq!(
        echo.stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        200
    );
    // Still usable after the generator's runtime is gone.
    use std::io::{Read, Write};
    let mut s = &socks[0];
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("read");
    assert_eq!(&b, b"x");
}

#[test]
fn nothing_listening_is_an_error_not_a_hang() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut cfg = RequestResponse::new(addr, 2, 64);
    cfg.duration = Some(Duration::from_secs(1));
    assert!(loadgen::request_response(&cfg).is_err());
    assert!(loadgen::bulk(&Bulk::new(addr, BulkMode::Sink, 1024)).is_err());
}
