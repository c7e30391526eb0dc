//! Upstream faults, each with the client's outcome asserted.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::*;

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
    let (hole, _fill) = syn_black_hole();
    let proxy = start_proxy_with(
        &[&[hole.local_addr().expect("addr")]],
        1,
        "  pool:\n    enabled: false\n    connect_timeout: 400ms\n    max_retries: 0\n  health_check:\n    enabled: false\n",
    );
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
    proxy.stop();
}
