//! Client faults: a reset mid-transfer, a half-close then silence, one byte per second, a
//! client that never reads a large response. Each runs next to other sessions (echo
//! round trips through a second listener of the same worker), which must be unaffected;
//! after each the proxy is back at its baseline (fds, table, slots, waiters, pool). One
//! test at a time ([`serial`]): fd counts are per process.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// A bulk upstream: after a 5-byte request it sends pattern bytes until the connection
/// fails (or 1 GiB).
fn bulk() -> Upstream {
    Upstream::start(|mut conn| {
        let mut req = [0u8; 5];
        if conn.read_exact(&mut req).is_err() {
            return;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        Pattern::new(5).fill(&mut chunk);
        for _ in 0..(1 << 14) {
            if conn.write_all(&chunk).is_err() {
                return;
            }
        }
    })
}

/// Other sessions: `n` echo round trips of 256 KiB, each byte-exact and well under the
/// generous bound. Returns the slowest.
fn others_unaffected(addr: SocketAddr, n: u64, case: &str) -> Duration {
    (0..n)
        .map(|i| {
            let took = echo_round_trip(addr, 256 * 1024, 1000 + i)
                .unwrap_or_else(|e| panic!("{case}: another session failed: {e}"));
            assert!(
                took < Duration::from_secs(5),
                "{case}: another session took {took:?}"
            );
            took
        })
        .max()
        .unwrap_or_default()
}

/// No warm pool and no prober: the fd count then moves only with the sessions.
const QUIET: &str = "  pool:\n    enabled: false\n  health_check:\n    enabled: false\n";

#[test]
fn a_client_that_resets_mid_transfer() {
    let _one = serial();
    let (up, echo) = (bulk(), Upstream::echo());
    let proxy = start_proxy_with(&[&[up.addr], &[echo.addr]], 1, QUIET);
    let base = Baseline::record(&proxy);
    for round in 0..3 {
        let mut c = connect_timed(proxy.addrs[0]).expect("connect");
        c.write_all(b"hello").expect("request");
        let mut got = vec![0u8; 256 * 1024];
        c.read_exact(&mut got).expect("the start of the response");
        reset(&c);
        drop(c);
        let slowest = others_unaffected(proxy.addrs[1], 3, "client reset");
        eprintln!("client reset, round {round}: slowest other session {slowest:?}");
    }
    let s = proxy.wait_for("closed", |s| s.total.sessions_closed == 12);
    assert!(s.total.client_errors >= 1, "the resets are counted: {s:#?}");
    eventually("the upstream's connections end", || up.open() == 0);
    base.assert_back(&proxy, "client reset mid-transfer");
    proxy.stop();
}

/// The client sends its request, half-closes and goes silent (neither reads nor closes)
/// for 2 s: the session stays, the answer waits for it, other sessions go on; then it
/// reads the whole answer and the end of the stream.
#[test]
fn a_client_that_half_closes_then_goes_silent() {
    const N: usize = 4 << 20;
    let _one = serial();
    let echo = Upstream::echo();
    let proxy = start_proxy_with(&[&[echo.addr], &[echo.addr]], 1, QUIET);
    let base = Baseline::record(&proxy);
    // A 4 KiB receive buffer: 4 MiB does not fit in the socket buffers on the way, so
    // the echo really waits for the silent client.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect_timeout(&proxy.addrs[0].into(), IO_TIMEOUT)
        .expect("connect");
    let mut c = with_timeouts(sock.into());
    let mut body = vec![0u8; N];
    Pattern::new(21).fill(&mut body);
    let mut w = c.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        w.write_all(&body)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let silent = Instant::now();
    let slowest = others_unaffected(proxy.addrs[1], 5, "half-close then silence");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(silent.elapsed()));
    assert_eq!(
        proxy.stats().total.sessions_active,
        1,
        "the silent session stays"
    );
    let (got, end) = read_all(&mut c);
    sender.join().expect("sender").expect("request sent");
    let mut expect = vec![0u8; N];
    Pattern::new(21).fill(&mut expect);
    assert_eq!(got.len(), N, "the whole answer after the silence ({end})");
    assert!(got == expect, "byte-exact");
    assert_eq!(end, "fin");
    eprintln!("half-close then silence: slowest other session {slowest:?}");
    drop(c);
    base.assert_back(&proxy, "half-close then silence");
    proxy.stop();
}

/// One byte per second for 4 s: each comes back on its own, and other sessions keep
/// their pace meanwhile.
#[test]
fn a_client_sending_one_byte_per_second() {
    let _one = serial();
    let echo = Upstream::echo();
    let proxy = start_proxy_with(&[&[echo.addr], &[echo.addr]], 1, QUIET);
    let base = Baseline::record(&proxy);
    let slow_addr = proxy.addrs[0];
    let slow = std::thread::spawn(move || {
        let mut c = connect_timed(slow_addr).expect("connect");
        for b in b"slow" {
            c.write_all(&[*b]).expect("one byte");
            let mut one = [0u8; 1];
            c.read_exact(&mut one).expect("its echo");
            assert_eq!(one[0], *b);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let mut rounds = 0;
    let mut slowest = Duration::ZERO;
    while !slow.is_finished() {
        slowest = slowest.max(others_unaffected(proxy.addrs[1], 1, "one byte per second"));
        rounds += 1;
    }
    slow.join().expect("the slow client got every byte back");
    eprintln!("one byte per second: {rounds} other sessions meanwhile, slowest {slowest:?}");
    assert!(rounds >= 4, "other sessions ran meanwhile: {rounds}");
    base.assert_back(&proxy, "one byte per second");
    proxy.stop();
}

/// A client that asks for a large response and never reads it: the proxy holds at most
/// `max_in_flight` buffers for it, other sessions are served, and its close releases
/// everything (the upstream's writes fail).
#[test]
fn a_client_that_never_reads_a_large_response() {
    let _one = serial();
    let (up, echo) = (bulk(), Upstream::echo());
    let proxy = start_proxy_with(&[&[up.addr], &[echo.addr]], 1, QUIET);
    let base = Baseline::record(&proxy);
    let hogs: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect_timed(proxy.addrs[0]).expect("connect");
            c.write_all(b"hello").expect("request");
            c
        })
        .collect();
    // Let the responses fill every buffer on the way.
    std::thread::sleep(Duration::from_millis(500));
    let held = proxy.stats().total.buffer_slots_in_use;
    let slowest = others_unaffected(proxy.addrs[1], 5, "never reads");
    let s = proxy.stats();
    assert!(
        s.total.buffer_slots_in_use <= 3 * 4,
        "at most max_in_flight (4) slots per non-reading client: {s:#?}"
    );
    eprintln!(
        "3 clients that never read: {held} slots held (of {}), slowest other session {slowest:?}",
        s.total.buffer_slots_total
    );
    drop(hogs);
    proxy.wait_for("closed", |s| s.total.sessions_closed == 8);
    eventually("the upstream's connections end", || up.open() == 0);
    base.assert_back(&proxy, "never reads a large response");
    proxy.stop();
}

/// Found by the soak: a client uploads to an echo upstream without reading the echo
/// (so the upstream, blocked on its own writes, stops reading), then resets. The proxy
/// keeps what it holds for the upstream to deliver it (close without loss), but the
/// upstream never reads again: without a bound the session, its slots and both fds stay
/// until the upstream gives up (never, for a server without timeouts).
/// `connection.session.send_timeout` is that bound (1 s here, 60 s by default).
#[test]
fn a_client_that_resets_while_its_upstream_is_stalled_is_released() {
    let _one = serial();
    let echo = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[echo.addr]],
        1,
        &format!("{QUIET}  session:\n    send_timeout: 1s\n"),
    );
    let base = Baseline::record(&proxy);
    let mut c = connect_timed(proxy.addr()).expect("connect");
    c.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let chunk = vec![9u8; 64 * 1024];
    let mut sent = 0usize;
    while c.write(&chunk).map(|n| sent += n).is_ok() {
        assert!(sent < 256 << 20, "never stalled");
    }
    let held = proxy.stats().total.buffer_slots_in_use;
    reset(&c);
    drop(c);
    eprintln!("stalled after {sent} bytes, {held} slots held; the client reset");
    base.assert_back(&proxy, "client reset while its upstream is stalled");
    proxy.stop();
}
