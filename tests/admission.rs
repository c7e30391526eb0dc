//! `max_active` end to end: grants that cross workers, and the bounded queue's rejection.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

fn echo_once(c: &mut TcpStream, msg: &[u8], within: Duration) -> std::io::Result<()> {
    c.write_all(msg)?;
    c.set_read_timeout(Some(within))?;
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back)?;
    assert_eq!(back, msg);
    Ok(())
}

/// With two workers and `max_active: 1`, a slot freed on one worker must wake a client
/// queued on the other (a grant that is recorded but never signalled would leave it
/// waiting until its read times out).
#[test]
fn a_grant_wakes_a_client_queued_on_another_worker() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        2,
        "  pool:\n    max_active: 1\n    max_idle: 1\n    queue_timeout: 60s\n",
    );
    let mut holder = connect_timed(proxy.addr()).expect("connect");
    echo_once(&mut holder, b"holder", Duration::from_secs(5)).expect("holder served");
    // Queue clients until both workers hold some (SO_REUSEPORT spreads them by hash).
    let mut waiters = Vec::new();
    loop {
        let mut c = connect_timed(proxy.addr()).expect("connect");
        let tag = format!("waiter {:02}", waiters.len());
        c.write_all(tag.as_bytes()).expect("write while queued");
        waiters.push((c, tag));
        let n = waiters.len() as u64;
        let s = proxy.wait_for("queued", |s| s.total.queued_total == n);
        if s.per_worker.iter().all(|w| w.queued_total > 0) && waiters.len() >= 4 {
            break;
        }
        assert!(
            waiters.len() < 40,
            "clients never reached both workers: {s:#?}"
        );
    }
    drop(holder);
    // Served first come, first served, whichever worker holds each: with one slot, a
    // waiter granted out of turn would hold it open while an earlier one's read times out.
    for (i, (mut c, tag)) in waiters.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut back = vec![0u8; tag.len()];
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("waiter {i} never served: {e}"));
        assert_eq!(back, tag.as_bytes());
        // Its session ends: the next waiter, possibly on the other worker, goes in.
    }
    let s = proxy.wait_for("all done", |s| s.admitted == 0 && s.queued == 0);
    assert_eq!(s.total.queue_timeouts, 0);
    proxy.stop();
}

/// A client that leaves the queue on one worker while the slot is granted from the other
/// gives the slot on: nobody waits beside a free slot.
#[test]
fn a_client_that_leaves_the_queue_does_not_keep_the_slot() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        2,
        "  pool:\n    max_active: 1\n    max_idle: 1\n    queue_timeout: 60s\n",
    );
    for round in 0..3 {
        let mut holder = connect_timed(proxy.addr()).expect("connect");
        echo_once(&mut holder, b"holder", Duration::from_secs(5)).expect("holder served");
        let leaver = connect_timed(proxy.addr()).expect("connect");
        let mut stayer = connect_timed(proxy.addr()).expect("connect");
        stayer.write_all(b"stayer").expect("write");
        proxy.wait_for("two queued", |s| s.queued == 2);
        drop(leaver);
        drop(holder);
        let mut back = [0u8; 6];
        stayer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stayer
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("round {round}: the slot was kept: {e}"));
        drop(stayer);
        proxy.wait_for("slot back", |s| s.admitted == 0 && s.queued == 0);
    }
    proxy.stop();
}

/// `max_queued` bounds the queue: the next client is closed at once and counted.
#[test]
fn a_full_queue_rejects_the_next_client() {
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_active: 1\n    max_idle: 1\n    max_queued: 1\n    queue_timeout: 60s\n",
    );
    let mut holder = connect_timed(proxy.addr()).expect("connect");
    echo_once(&mut holder, b"holder", Duration::from_secs(5)).expect("holder served");
    let mut waiter = connect_timed(proxy.addr()).expect("connect");
    waiter.write_all(b"waiter").expect("write");
    proxy.wait_for("one queued", |s| s.queued == 1);
    let started = Instant::now();
    let mut rejected = connect_timed(proxy.addr()).expect("connect");
    rejected
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = rejected.read(&mut [0u8; 8]);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "the rejected client is closed: {r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "closed at once");
    let s = proxy.wait_for("rejection counted", |s| s.total.queue_rejected == 1);
    assert_eq!((s.admitted, s.queued), (1, 1));
    drop(holder);
    let mut back = [0u8; 6];
    waiter
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    waiter.read_exact(&mut back).expect("the waiter is served");
    assert_eq!(&back, b"waiter");
    proxy.stop();
}
