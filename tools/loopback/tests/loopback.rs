//! The upstreams against the blocking load and plain sockets, no proxy in between: counts, bytes and closes must be exact.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sssonector_loopback::{blocking, echo_blocking, ServerKind, Upstream};

fn connect(up: &Upstream) -> TcpStream {
    let s = TcpStream::connect(up.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

#[test]
fn blocking_request_response_against_echo() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let r = blocking::request_response(echo.addr(), 4, 64, Duration::from_millis(500))
        .expect("request/response");
    assert!(r.requests > 0);
    assert_eq!(r.connections, 4);
    assert_eq!(r.bytes_received, r.requests * 64);
    assert_eq!(r.latency.count, r.requests);
    assert!(r.elapsed >= Duration::from_millis(500) && r.elapsed < Duration::from_secs(5));
    // What the echo server saw agrees with what the load counted.
    assert_eq!(echo.stats().bytes_in.load(Relaxed), r.requests * 64);
    assert_eq!(echo.stats().connections.load(Relaxed), 4);
}

#[test]
fn blocking_bulk_echo_is_exact() {
    const N: u64 = 8 * 1024 * 1024 + 12_345; // not a multiple of any buffer size
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let r = blocking::bulk_echo(echo.addr(), N).expect("bulk echo");
    assert_eq!(r.bytes_sent, N);
    assert_eq!(r.transferred(), N);
    assert!(r.mib_per_sec() > 0.0);
}

#[test]
fn sink_acknowledges_the_byte_count() {
    let sink = Upstream::start(ServerKind::Sink).expect("sink upstream");
    let mut s = connect(&sink);
    let body = vec![7u8; 300_001];
    s.write_all(&body).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut ack = Vec::new();
    s.read_to_end(&mut ack).expect("read the count");
    assert_eq!(ack, 300_001u64.to_le_bytes());
}

#[test]
fn source_sends_what_is_asked_then_closes() {
    let source = Upstream::start(ServerKind::Source).expect("source upstream");
    let mut s = connect(&source);
    let n = 1_000_003u64;
    s.write_all(&n.to_le_bytes()).expect("ask");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got.len() as u64, n);
    // Byte i of the stream is `i as u8`.
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(source.stats().bytes_out.load(Relaxed), n);
}

#[test]
fn echo_half_closes_after_the_data() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let mut s = connect(&echo);
    s.write_all(b"hello").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to the echo's FIN");
    assert_eq!(got, b"hello");
}

#[test]
fn stop_closes_every_connection() {
    let echo = Upstream::start(ServerKind::Echo).expect("echo upstream");
    let addr = echo.addr();
    let mut s = connect(&echo);
    s.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("echo");
    let t = Instant::now();
    echo.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The connection is closed (EOF or reset), and the port refuses new ones.
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn echo_blocking_serves_one_connection() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || echo_blocking(l.accept().expect("accept").0));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"ping").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"ping");
    t.join().expect("echo thread");
}

#[test]
fn nothing_listening_is_an_error_not_a_hang() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("addr");
    assert!(blocking::request_response(addr, 2, 64, Duration::from_secs(1)).is_err());
    assert!(blocking::bulk_echo(addr, 1024).is_err());
}

#[test]
fn raise_nofile_never_lowers() {
    let now = sssonector_loopback::raise_nofile(0).expect("getrlimit");
    assert!(sssonector_loopback::raise_nofile(now + 1).expect("raise") >= now);
}
