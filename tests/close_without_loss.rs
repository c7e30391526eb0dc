//! Close without loss (issue 12, item 2): when one side resets, what was already
//! accepted for the other side is delivered before that side is closed.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

const RESPONSE: usize = 200_000;

/// Reads until EOF or an error; returns the bytes read and how the stream ended.
fn read_all(c: &mut std::net::TcpStream) -> (Vec<u8>, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, "fin".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, format!("{:?}", e.kind())),
        }
    }
}

/// The side-by-side case: the upstream sends 200,000 bytes, waits 50 ms, resets;
/// the client (4 KiB receive buffer) starts reading after 300 ms. HAProxy and nginx
/// deliver every byte; so must the proxy, in each send mode.
#[test]
fn a_response_followed_by_a_reset_reaches_a_slow_client_whole() {
    let up = Upstream::start(|mut conn| {
        let mut req = [0u8; 3];
        if conn.read_exact(&mut req).is_err() {
            return; // a pooled connection closed unused
        }
        let mut body = vec![0u8; RESPONSE];
        Pattern::new(200).fill(&mut body);
        if conn.write_all(&body).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        reset(&conn);
    });
    let mut expect = vec![0u8; RESPONSE];
    Pattern::new(200).fill(&mut expect);
    for mode in ["send", "fixed", "zerocopy", "auto"] {
        let proxy = start_proxy_with(
            &[&[up.addr]],
            1,
            &format!("  buffer:\n    send_mode: {mode}\n"),
        );
        for round in 0..3 {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            sock.set_recv_buffer_size(4096).expect("rcvbuf");
            sock.connect_timeout(&proxy.addr().into(), IO_TIMEOUT)
                .expect("connect");
            let mut c = with_timeouts(sock.into());
            c.write_all(b"GET").expect("request");
            std::thread::sleep(Duration::from_millis(300));
            let (got, end) = read_all(&mut c);
            assert_eq!(
                got.len(),
                RESPONSE,
                "{mode} round {round}: the whole response before the close ({end})"
            );
            assert!(got == expect, "{mode} round {round}: byte-exact");
        }
        // Zero-copy slots come back with their notifications, once delivered.
        let s = proxy.wait_for("closed, every slot back", |s| {
            s.total.sessions_active == 0
                && s.total.sessions_total == 3
                && s.total.buffer_slots_in_use == 0
        });
        assert_eq!(s.total.upstream_errors, 3, "{mode}: the resets are counted");
        proxy.stop();
    }
}

/// The other way: a client that uploads and resets. What reached the proxy before the
/// reset still reaches the upstream, and the upstream then sees the end of the stream.
#[test]
fn an_upload_followed_by_a_reset_reaches_a_slow_upstream_whole() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let up = Upstream::start(move |mut conn| {
        let _ = socket2::SockRef::from(&conn).set_recv_buffer_size(4096);
        std::thread::sleep(Duration::from_millis(300));
        let (got, end) = read_all(&mut conn);
        if !got.is_empty() {
            let _ = tx.lock().map(|tx| tx.send((got, end)));
        }
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, "");
    let mut c = connect_timed(proxy.addr()).expect("connect");
    let mut body = vec![0u8; RESPONSE];
    Pattern::new(201).fill(&mut body);
    c.write_all(&body).expect("upload");
    // Everything left the client's socket: the proxy has it.
    proxy.wait_for("uploaded", |s| {
        s.total.bytes_client_to_upstream == RESPONSE as u64
    });
    reset(&c);
    drop(c);
    let (got, end) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream's record");
    assert_eq!(got.len(), RESPONSE, "the whole upload ({end})");
    assert!(got == body, "byte-exact");
    proxy.wait_for("closed", |s| s.total.sessions_active == 0);
    proxy.stop();
}
