//! Every duration key at its maximum (Go's, `2562047h47m16.854775807s`): no deadline
//! computation in the workers, the pool, its keeper or the prober may overflow, and the
//! proxy relays and stops as usual.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

const MAX: &str = "2562047h47m16.854775807s";

#[test]
fn every_duration_at_its_maximum_runs_and_stops() {
    let up = Upstream::echo();
    // A refusing second endpoint: its failed pool dials back off by retry_interval.
    let proxy = start_proxy_with(
        &[&[up.addr, closed_port()]],
        2,
        &format!(
            "  pool:\n    max_idle: 4\n    max_active: 4\n    idle_timeout: {MAX}\n    connect_timeout: {MAX}\n    retry_interval: {MAX}\n    queue_timeout: {MAX}\n  session:\n    idle_timeout: {MAX}\n  health_check:\n    interval: {MAX}\n    timeout: 2562047h\n"
        ),
    );
    proxy.wait_for("refusing endpoint's dials failed", |s| {
        s.total.upstream_connect_errors >= 1
    });
    // Four clients relay; a fifth queues (max_active 4) until one leaves.
    let mut held = Vec::new();
    for i in 0..4u8 {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        c.write_all(&[i; 3]).expect("write");
        let mut back = [0u8; 3];
        // Round robin may pick the refusing endpoint first; the retry goes to the other
        // at once (no retry_interval wait within a round).
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.read_exact(&mut back).expect("relayed");
        assert_eq!(back, [i; 3]);
        held.push(c);
    }
    let mut queued = connect_timed(proxy.addr()).expect("connect");
    queued.write_all(b"q").expect("write while queued");
    proxy.wait_for("one queued", |s| s.queued == 1);
    drop(held.pop());
    let mut back = [0u8; 1];
    queued.read_exact(&mut back).expect("granted, then relayed");
    drop(queued);
    drop(held);
    proxy.wait_for("all closed", |s| s.total.sessions_active == 0);
    proxy.stop();
}
