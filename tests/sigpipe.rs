//! `WriteFixed` (send_mode `fixed`) cannot pass `MSG_NOSIGNAL`: a write to a reset peer
//! raises SIGPIPE. Its own test binary, since it sets SIGPIPE's default action (which
//! kills the process) before starting the proxy, as a program embedding the library may.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

#[test]
fn a_reset_peer_under_fixed_sends_does_not_kill_the_process() {
    // SAFETY: restoring the default disposition has no memory preconditions; this binary
    // runs only this test.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // The upstream streams forever; the client reads a little, then resets.
    let up = Upstream::start(|mut conn| {
        let buf = vec![5u8; 64 << 10];
        while conn.write_all(&buf).is_ok() {}
    });
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    enabled: false\n  buffer:\n    send_mode: fixed\n",
    );
    for _ in 0..5 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        let mut buf = [0u8; 4096];
        c.read_exact(&mut buf).expect("data flows");
        reset(&c);
        drop(c);
    }
    let s = proxy.wait_for("every session closed", |s| {
        s.total.sessions_total == 5 && s.total.sessions_active == 0
    });
    if s.data_plane == sssonector::driver::DataPlane::IoUring {
        assert!(s.buffers_registered, "fixed sends need registered buffers");
    }
    // Still alive and relaying.
    let echo = Upstream::echo();
    let proxy2 = start_proxy_with(&[&[echo.addr]], 1, "  buffer:\n    send_mode: fixed\n");
    let mut c = connect_timed(proxy2.addr()).expect("connect");
    c.write_all(b"alive").expect("write");
    let mut back = [0u8; 5];
    c.read_exact(&mut back).expect("read");
    assert_eq!(&back, b"alive");
    std::thread::sleep(Duration::from_millis(50));
    proxy2.stop();
    proxy.stop();
}
