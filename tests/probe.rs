//! The start-up probe of io_uring leaves the caller's thread alone: a ring's teardown may
//! notify the thread that made it, which would interrupt that thread's next blocking
//! call (a socket read with a timeout then fails with EINTR). `start` and `check` call
//! the probe from the user's thread, so it runs on a thread of its own.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

#[test]
fn probing_io_uring_does_not_interrupt_the_callers_next_read() {
    let config = support::test_config(&[&[support::closed_port()]], 1, "");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (_peer, _) = l.accept().expect("accept");
    c.set_read_timeout(Some(Duration::from_millis(30)))
        .expect("timeout");
    for round in 0..40 {
        let plan = sssonector::proxy::plan_for(&config).expect("a plan");
        assert!(plan.summary().starts_with("data plane: "));
        let err = c.read(&mut [0u8; 1]).expect_err("nothing to read");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "round {round}: the read was interrupted: {err}"
        );
    }
}
