//! The epoll driver completes ops as io_uring would: the results, `more`, the slot a
//! receive picked, and ENOBUFS only once data is there.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::*;

fn driver(slots: usize) -> Epoll {
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    Epoll::new(
        BufferRegistry::new(slots, 4096).expect("registry"),
        &[refused],
        Duration::from_secs(5),
        Duration::from_millis(30),
        Duration::from_millis(20),
    )
    .expect("epoll")
}

/// Waits and reaps until `n` completions came (or 5 s passed).
fn reap(ep: &mut Epoll, n: usize) -> Vec<Completion> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while all.len() < n {
        assert!(Instant::now() < deadline, "only {all:?}");
        ep.submit_and_wait().expect("wait");
        ep.reap(&mut batch);
        all.append(&mut batch);
    }
    all
}

/// One wait, whatever it brings (a short tick keeps it from blocking long).
fn reap_once(ep: &mut Epoll) -> Vec<Completion> {
    let mut batch = Vec::new();
    ep.submit_and_wait().expect("wait");
    ep.reap(&mut batch);
    batch
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

#[test]
fn a_receive_takes_a_slot_only_when_data_comes() {
    let mut ep = driver(2);
    let (mut peer, ours) = pair();
    ep.recv(ours.as_raw_fd(), false, 7);
    ep.tick(99, true);
    let first = reap(&mut ep, 1);
    assert_eq!(first[0].user_data, 99, "only the tick: {first:?}");
    assert_eq!(ep.buffers().in_use(), 0);
    peer.write_all(b"hello").expect("write");
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res, c.more), (7, 5, false));
    let slot = c.buffer.expect("the slot it filled");
    ep.buffers_mut().take(slot);
    assert_eq!(ep.buffers().in_use(), 1);
    assert_eq!(ep.in_flight(), 0);
}

#[test]
fn with_no_free_slot_a_receive_fails_with_enobufs_once_data_is_there() {
    let mut ep = driver(1);
    let slot = ep.buffers_mut().pop_free().expect("the one slot");
    ep.buffers_mut().take(slot);
    let (mut peer, ours) = pair();
    ep.recv(ours.as_raw_fd(), false, 7);
    ep.tick(99, true);
    assert_eq!(reap(&mut ep, 1)[0].user_data, 99, "no data: it waits");
    peer.write_all(b"x").expect("write");
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res, c.buffer), (7, -libc::ENOBUFS, None));
}

#[test]
fn a_probe_completes_at_once_and_eof_is_zero() {
    let mut ep = driver(2);
    let (peer, ours) = pair();
    ep.recv(ours.as_raw_fd(), true, 7);
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.res, c.buffer), (-libc::EAGAIN, None));
    drop(peer);
    ep.recv(ours.as_raw_fd(), false, 8);
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res, c.buffer), (8, 0, None));
    assert_eq!(ep.buffers().in_use(), 0, "an EOF holds no slot");
}

#[test]
fn accept_is_multishot() {
    let mut ep = driver(1);
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    ep.accept(l.as_raw_fd(), 3);
    let addr = l.local_addr().expect("addr");
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let got = reap(&mut ep, 3);
    for c in &got {
        assert_eq!(c.user_data, 3);
        assert!(c.res >= 0 && c.more, "{c:?}");
        crate::driver::sys::close(c.res, false);
    }
    assert_eq!(ep.in_flight(), 1, "the accept goes on");
}

#[test]
fn a_refused_connect_cancels_its_timeout() {
    let mut ep = driver(1);
    let sock = sys::stream_socket(&"127.0.0.1:1".parse().expect("addr")).expect("socket");
    ep.connect(sock.as_raw_fd(), 0, 10, 11);
    let got = reap(&mut ep, 2);
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    assert_eq!(res(10), Some(-libc::ECONNREFUSED), "{got:?}");
    assert_eq!(res(11), Some(-libc::ECANCELED), "{got:?}");
    assert_eq!(ep.in_flight(), 0);
}

#[test]
fn a_connect_completes_and_its_timeout_is_cancelled() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut ep = driver(1);
    ep.add_endpoint(l.local_addr().expect("addr"));
    let sock = sys::stream_socket(&l.local_addr().expect("addr")).expect("socket");
    ep.connect(sock.as_raw_fd(), 1, 10, 11);
    let got = reap(&mut ep, 2);
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    assert_eq!(res(10), Some(0), "{got:?}");
    assert_eq!(res(11), Some(-libc::ECANCELED), "{got:?}");
}

#[test]
fn timers_fire_and_cancel() {
    let mut ep = driver(1);
    let started = Instant::now();
    ep.retry_timer(5);
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res), (5, -libc::ETIME));
    assert!(started.elapsed() >= Duration::from_millis(30));
    ep.retry_timer(6);
    ep.cancel_op(6, 7);
    let got = reap(&mut ep, 2);
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    assert_eq!(res(6), Some(-libc::ECANCELED));
    assert_eq!(res(7), Some(0));
    ep.cancel_op(6, 8);
    assert_eq!(
        reap(&mut ep, 1)[0].res,
        -libc::ENOENT,
        "nothing left to cancel"
    );
    assert_eq!(ep.in_flight(), 0);
}

#[test]
fn the_tick_repeats_until_cancelled() {
    let mut ep = driver(1);
    ep.tick(1, false);
    let got = reap(&mut ep, 2);
    assert!(
        got.iter().all(|c| c.res == -libc::ETIME && c.more),
        "{got:?}"
    );
    ep.cancel_all(2);
    let got = reap(&mut ep, 2);
    let res = |ud| {
        got.iter()
            .find(|c| c.user_data == ud)
            .map(|c| (c.res, c.more))
    };
    assert_eq!(res(1), Some((-libc::ECANCELED, false)));
    assert_eq!(res(2), Some((1, false)));
    assert_eq!(ep.in_flight(), 0);
}

#[test]
fn cancelling_an_fd_ends_its_ops() {
    let mut ep = driver(2);
    let (_peer, ours) = pair();
    ep.recv(ours.as_raw_fd(), false, 1);
    ep.watch_hangup(ours.as_raw_fd(), 2);
    assert!(reap_once(&mut ep).is_empty(), "nothing is ready");
    ep.cancel_fd(ours.as_raw_fd(), 3);
    let got = reap(&mut ep, 3);
    let res = |ud| got.iter().find(|c| c.user_data == ud).map(|c| c.res);
    assert_eq!(res(1), Some(-libc::ECANCELED));
    assert_eq!(res(2), Some(-libc::ECANCELED));
    assert_eq!(res(3), Some(2));
    ep.release_fd(ours.as_raw_fd(), false);
}

#[test]
fn a_hangup_watch_sees_the_peer_s_fin() {
    let mut ep = driver(1);
    let (peer, ours) = pair();
    ep.watch_hangup(ours.as_raw_fd(), 4);
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let c = reap(&mut ep, 1)[0];
    assert_eq!(c.user_data, 4);
    assert!(
        i16::try_from(c.res).is_ok_and(|ev| ev & libc::POLLRDHUP != 0),
        "{c:?}"
    );
}

#[test]
fn a_queue_goes_out_in_one_vectored_send() {
    let mut ep = driver(4);
    let (mut peer, ours) = pair();
    peer.write_all(&[1u8; 4096]).expect("write");
    let mut q = SlotQueue::default();
    for _ in 0..2 {
        ep.recv(ours.as_raw_fd(), false, 1);
        let c = reap(&mut ep, 1)[0];
        let slot = c.buffer.expect("slot");
        ep.buffers_mut().take(slot);
        ep.buffers_mut().enqueue(&mut q, slot, c.res as usize);
        if ep.buffers().pending(&q).map(|p| p.len()).sum::<usize>() == 4096 {
            break;
        }
    }
    let queued: usize = ep.buffers().pending(&q).map(|p| p.len()).sum();
    ep.send_queue(ours.as_raw_fd(), &q, &|msg| 100 + u64::from(msg));
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res), (100, queued as i32));
    let mut back = vec![0u8; queued];
    peer.read_exact(&mut back).expect("read back");
    assert!(back.iter().all(|&b| b == 1));
}

#[test]
fn the_wake_eventfd_is_read_when_signalled() {
    let mut ep = driver(1);
    let efd = sys::eventfd().expect("eventfd");
    ep.wait_wake(efd.as_raw_fd(), 9);
    ep.tick(99, true);
    assert_eq!(reap(&mut ep, 1)[0].user_data, 99, "not signalled yet");
    sys::eventfd_signal(efd.as_raw_fd());
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res), (9, 8));
}

/// A short read waits for the next edge, except where the peer's FIN (whose edge has
/// come and gone) follows the data: the EOF is still delivered.
#[test]
fn after_a_short_read_the_next_receive_waits_for_data_or_the_fin() {
    let mut ep = driver(4);
    let (mut peer, ours) = pair();
    peer.write_all(b"first").expect("write");
    ep.recv(ours.as_raw_fd(), false, 1);
    let c = reap(&mut ep, 1)[0];
    assert_eq!(c.res, 5);
    ep.buffers_mut().take(c.buffer.expect("slot"));
    // Drained: the next receive waits for an edge, and data raises one.
    ep.recv(ours.as_raw_fd(), false, 2);
    ep.tick(99, true);
    assert_eq!(reap(&mut ep, 1)[0].user_data, 99, "nothing yet");
    peer.write_all(b"second").expect("write");
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res), (2, 6));
    ep.buffers_mut().take(c.buffer.expect("slot"));
    // Data and the FIN together: a short read, then the EOF.
    peer.write_all(b"last").expect("write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    std::thread::sleep(Duration::from_millis(20));
    ep.recv(ours.as_raw_fd(), false, 3);
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res), (3, 4));
    ep.buffers_mut().take(c.buffer.expect("slot"));
    ep.recv(ours.as_raw_fd(), false, 4);
    let c = reap(&mut ep, 1)[0];
    assert_eq!((c.user_data, c.res, c.buffer), (4, 0, None), "the EOF");
}
