//! The tail of a stream is never lost when its FIN arrives: a peer that sends a burst and
//! closes at once, in front of a slow reader, in each send mode and each direction. The
//! FIN reaches the proxy while most of the burst is still queued in its slots and socket
//! buffers; the reader must get every byte, then the FIN.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const BURST: usize = (768 << 10) + 4321;

/// Reads `conn` to EOF in small pieces with pauses, checking the pattern; returns the count.
fn slow_read(conn: &mut TcpStream, seed: u64) -> usize {
    let mut expect = vec![0u8; BURST];
    Pattern::new(seed).fill(&mut expect);
    let mut got = Vec::with_capacity(BURST);
    let mut buf = [0u8; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("slow reader: {e} after {} bytes", got.len()),
        }
        if got.len() % (64 << 10) < 8192 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(got.len(), BURST, "every byte, then the FIN");
    assert!(got == expect, "byte-exact");
    got.len()
}

fn small_rcvbuf(conn: &TcpStream) {
    let _ = socket2::SockRef::from(conn).set_recv_buffer_size(16 << 10);
}

fn burst(conn: &mut TcpStream, seed: u64) {
    let mut data = vec![0u8; BURST];
    Pattern::new(seed).fill(&mut data);
    conn.write_all(&data).expect("burst");
}

/// The upstream waits for a request byte, bursts, and closes; the client reads slowly.
fn upstream_burst_then_close(mode: &str) {
    let up = Upstream::start(|mut conn| {
        let mut go = [0u8; 1];
        if conn.read_exact(&mut go).is_err() {
            return; // a pooled connection closed unused
        }
        burst(&mut conn, 77);
        // Dropped here: FIN right behind the burst.
    });
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        &format!("  buffer:\n    send_mode: {mode}\n    max_pool_size: 16\n"),
    );
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(16 << 10).expect("rcvbuf");
    sock.connect_timeout(&proxy.addr().into(), IO_TIMEOUT)
        .expect("connect");
    let mut c = with_timeouts(sock.into());
    c.write_all(b"g").expect("request");
    // Let the burst and the FIN reach the proxy before reading anything.
    std::thread::sleep(Duration::from_millis(200));
    slow_read(&mut c, 77);
    drop(c);
    let s = proxy.wait_for("closed", |s| s.total.sessions_active == 0);
    assert_eq!(s.total.bytes_upstream_to_client, BURST as u64, "{mode}");
    assert_eq!(s.total.buffer_slots_in_use, 0, "{mode}");
    proxy.stop();
}

/// The client bursts and half-closes; the upstream reads slowly, then answers the count.
fn client_burst_then_close(mode: &str) {
    let up = Upstream::start(|mut conn| {
        small_rcvbuf(&conn);
        let mut first = [0u8; 1];
        if conn.read_exact(&mut first).is_err() {
            return; // a pooled connection closed unused
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut rest = first.to_vec();
        let mut buf = [0u8; 8192];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
            if rest.len() % (64 << 10) < 8192 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut expect = vec![0u8; BURST];
        Pattern::new(78).fill(&mut expect);
        let verdict = if rest == expect { "exact" } else { "differs" };
        let _ = conn.write_all(format!("{} {verdict}", rest.len()).as_bytes());
    });
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        &format!("  buffer:\n    send_mode: {mode}\n    max_pool_size: 16\n"),
    );
    let mut c = connect_timed(proxy.addr()).expect("connect");
    burst(&mut c, 78);
    c.shutdown(std::net::Shutdown::Write).expect("fin");
    let answer = read_to_end(&mut c).expect("answer");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{BURST} exact"),
        "{mode}"
    );
    proxy.wait_for("closed", |s| s.total.sessions_active == 0);
    proxy.stop();
}

#[test]
fn an_upstream_burst_then_close_reaches_a_slow_client_whole() {
    for mode in ["send", "fixed", "zerocopy", "auto"] {
        upstream_burst_then_close(mode);
    }
}

#[test]
fn a_client_burst_then_close_reaches_a_slow_upstream_whole() {
    for mode in ["send", "fixed", "zerocopy", "auto"] {
        client_burst_then_close(mode);
    }
}
