//! Pooled upstream connections are use-once: a session's upstream connection, however
//! the session ends (here: by the inactivity timeout), is closed and never handed on.

mod support;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// An echo upstream that reports everything each connection received, when it ends.
fn recording_echo() -> (Upstream, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let up = Upstream::start(move |mut conn| {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        if !seen.is_empty() {
            let _ = tx.lock().map(|tx| tx.send(seen));
        }
    });
    (up, rx)
}

#[test]
fn a_timed_out_sessions_upstream_is_closed_not_pooled() {
    let (up, seen) = recording_echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 2\n  session:\n    idle_timeout: 500ms\n",
    );
    proxy.wait_for("pool warm", |s| s.pool.idle == 2);
    let mut quiet = connect_timed(proxy.addr()).expect("connect");
    quiet.write_all(b"<first>").expect("write");
    let mut back = [0u8; 7];
    quiet.read_exact(&mut back).expect("echo");
    proxy.wait_for("timed out", |s| s.total.session_timeouts == 1);
    // The upstream side of the timed-out session is closed: its record arrives.
    let first = seen
        .recv_timeout(Duration::from_secs(5))
        .expect("the timed-out session's upstream connection was closed");
    assert_eq!(first, b"<first>");
    // Later clients each get a connection of their own, never the first one.
    for i in 0..4 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        let tag = format!("<client {i}>");
        c.write_all(tag.as_bytes()).expect("write");
        let mut back = vec![0u8; tag.len()];
        c.read_exact(&mut back).expect("echo");
        c.shutdown(std::net::Shutdown::Write).expect("fin");
        assert_eq!(read_to_end(&mut c).expect("eof"), b"");
        let got = seen
            .recv_timeout(Duration::from_secs(5))
            .expect("the connection ends with its session");
        assert_eq!(
            String::from_utf8_lossy(&got),
            tag,
            "one upstream connection carried one session"
        );
    }
    let s = proxy.wait_for("hits", |s| s.total.pool_hits >= 5);
    assert_eq!(s.total.session_timeouts, 1);
    proxy.stop();
}
