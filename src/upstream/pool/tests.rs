//! Unit tests of the warm pool.

use super::*;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

fn conn(l: &TcpListener) -> (OwnedFd, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (OwnedFd::from(c), s)
}

#[test]
fn shares_add_up_to_max_idle_over_the_endpoints() {
    let now = Instant::now();
    let t = Duration::from_secs(60);
    for (max_idle, endpoints) in [(5, 2), (1, 2), (90, 3), (7, 1)] {
        let p = WarmPool::new(endpoints, max_idle, t, t, now).unwrap();
        let total: usize = (0..endpoints).map(|e| p.reserve_dials(e, now, 1000)).sum();
        assert_eq!(total, max_idle, "max_idle {max_idle} over {endpoints}");
    }
}

#[test]
fn target_follows_demand_after_the_first_window() {
    let start = Instant::now();
    let t = Duration::from_secs(10);
    let p = WarmPool::new(1, 8, t, t, start).unwrap();
    assert_eq!(p.reserve_dials(0, start, 1), 1, "capped by the caller");
    assert_eq!(p.reserve_dials(0, start, 100), 7, "warm from startup");
    for _ in 0..8 {
        p.dial_ended(0);
    }
    let later = start + t;
    assert_eq!(p.reserve_dials(0, later, 100), 0, "no demand: no refill");
    // Two sessions ask for the endpoint and find nothing idle: the demand counts.
    assert!(p.take(0, later, true).is_none());
    assert!(p.take(0, later, true).is_none());
    assert_eq!(p.reserve_dials(0, later, 100), 2);
    p.dial_ended(0);
    p.dial_ended(0);
    assert_eq!(
        p.reserve_dials(0, later + t, 100),
        2,
        "the previous window still counts"
    );
    p.dial_ended(0);
    p.dial_failed(0, later + t + t + Duration::from_secs(1));
    assert_eq!(p.reserve_dials(0, later + t + t, 100), 0, "backing off");
}

#[test]
fn clients_take_the_newest_and_the_taker_owns_the_fd() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let p = WarmPool::new(1, 4, Duration::from_secs(60), Duration::from_secs(1), start).unwrap();
    let mut servers = Vec::new();
    let mut raws = Vec::new();
    for i in 0..3 {
        assert_eq!(p.reserve_dials(0, start, 1), 1);
        let (fd, s) = conn(&l);
        raws.push(fd.as_raw_fd());
        servers.push(s);
        p.put(0, fd, start + Duration::from_secs(i), 0).unwrap();
    }
    assert_eq!(p.total_idle(), 3);
    let c = p.take(0, start, true).unwrap();
    assert_eq!(c.raw(), raws[2], "newest first");
    assert_eq!(p.idle(0), 2);
    p.close();
    assert_eq!(p.total_idle(), 0);
    assert!(p.reserve_dials(0, start, 10) == 0, "closed");
}

#[test]
fn expiry_retirement_and_flush() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let t = Duration::from_secs(10);
    let p = WarmPool::new(1, 8, t, t, start).unwrap();
    let mut servers = Vec::new();
    for age in [0, 5, 9] {
        p.reserve_dials(0, start, 1);
        let (fd, s) = conn(&l);
        servers.push(s);
        p.put(0, fd, start + Duration::from_secs(age), 0).unwrap();
    }
    let mut out = Removed {
        fds: Vec::new(),
        learned: Vec::new(),
        replace: 0,
    };
    p.lock()
        .sweep(&p, start + Duration::from_secs(15), |_| 0, &mut out);
    assert_eq!(out.fds.len(), 2, "the two older than 10 s");
    assert_eq!(p.stats().discarded(Discard::Expired), 2);
    assert_eq!(out.replace, 0, "expired ones are not replaced");
    p.lock()
        .sweep(&p, start + Duration::from_secs(15), |_| 1, &mut out);
    assert_eq!(p.stats().discarded(Discard::Flushed), 1);
    assert_eq!(p.total_idle(), 0);
}

#[test]
fn a_reload_reshares_max_idle_and_flushes_retired_endpoints() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let t = Duration::from_secs(10);
    let p = WarmPool::new(2, 4, t, t, start).unwrap();
    let mut servers = Vec::new();
    for ep in [0, 0, 1] {
        assert_eq!(p.reserve_dials(ep, start, 1), 1);
        let (fd, s) = conn(&l);
        servers.push(s);
        p.put(ep, fd, start, 0).unwrap();
    }
    // Endpoint 1 retired (its down epoch went to 1), endpoint 2 added.
    let later = start + t * 3;
    let closed = p.reconfigure(
        &Reconfigure {
            endpoints: 3,
            serving: &[0, 2],
            warm: &[2],
            flush: &[(1, 1)],
            max_idle: 6,
            idle_timeout: t * 2,
            retry_interval: t,
        },
        later,
    );
    assert_eq!(closed.len(), 1, "the retired endpoint's idle connection");
    assert_eq!(p.stats().discarded(Discard::Flushed), 1);
    assert_eq!((p.idle(0), p.idle(1), p.total_idle()), (2, 0, 2));
    assert_eq!(p.idle_timeout(), t * 2);
    assert_eq!(p.reserve_dials(1, later, 100), 0, "no share, no refill");
    assert_eq!(
        p.reserve_dials(2, later, 100),
        3,
        "new: its full share at once"
    );
    assert_eq!(
        p.reserve_dials(0, later, 100),
        0,
        "past the start window: demand decides"
    );
    let (fd, _s) = conn(&l);
    assert!(p.put(1, fd, later, 1).is_err(), "a late dial is refused");
    // The pool turned off: no endpoint has a share, every idle connection goes.
    let closed = p.reconfigure(
        &Reconfigure {
            endpoints: 3,
            serving: &[0, 2],
            warm: &[],
            flush: &[(0, 0), (1, 1), (2, 0)],
            max_idle: 0,
            idle_timeout: t,
            retry_interval: t,
        },
        later,
    );
    assert_eq!(closed.len(), 2);
    assert_eq!(p.total_idle(), 0);
    assert_eq!(p.reserve_dials(2, later, 100), 0);
}

#[test]
fn young_closes_space_out_the_redials() {
    let t0 = Instant::now();
    let retry = Duration::from_secs(5);
    let mut p = EndpointPool::default();
    p.young_close(t0, t0 + Duration::from_millis(150), retry);
    assert_eq!(p.backoff_until, Some(t0 + retry));
    p.young_close(t0 - Duration::from_secs(1), t0, retry);
    assert_eq!(p.backoff_until, Some(t0 + retry), "never shortened");
    let mut old = EndpointPool::default();
    old.young_close(t0, t0 + Duration::from_secs(10), retry);
    assert_eq!(
        old.backoff_until, None,
        "older than retry_interval: replaced at once"
    );
}

#[test]
fn a_lifetime_is_learned_from_agreeing_closes_only() {
    let idle = Duration::from_secs(300);
    let ms = Duration::from_millis;
    let t0 = Instant::now();
    let mut l = Lifetime::default();
    assert_eq!(l.observe(ms(10_000), t0, idle), None);
    assert_eq!(l.observe(ms(10_020), t0, idle), None);
    assert_eq!(
        l.observe(ms(10_010), t0, idle),
        None,
        "a batch closed at once may be a restart"
    );
    let t1 = t0 + ms(10_000);
    assert_eq!(l.observe(ms(10_000), t1, idle), Some(ms(10_000)));
    assert_eq!(l.retire_age(idle), ms(8_000));
    assert_eq!(l.observe(ms(10_000), t1, idle), None, "nothing new");
    let mut restart = Lifetime::default();
    for (i, age) in [100, 40_000, 9_000, 200_000].into_iter().enumerate() {
        let at = t0 + ms(50_000) * i as u32;
        assert_eq!(restart.observe(ms(age), at, idle), None, "ages disagree");
    }
    let mut lapsing = Lifetime::default();
    for i in 0..3 {
        lapsing.observe(ms(2_000), t0 + ms(2_000) * i, idle);
    }
    assert_eq!(lapsing.learned, Some(ms(2_000)));
    lapsing.forget_if_lapsed(t0 + ms(4_000 + 59_000));
    assert_eq!(
        lapsing.learned,
        Some(ms(2_000)),
        "believed for a minute at least"
    );
    lapsing.forget_if_lapsed(t0 + ms(4_000 + 60_000));
    assert_eq!(lapsing.learned, None, "then learned anew");
    assert_eq!(lapsing.retire_age(idle), idle);
    let mut longer = Lifetime::default();
    for i in 0..3 {
        assert_eq!(
            longer.observe(ms(400_000), t0 + ms(400_000) * i, idle),
            None,
            "idle_timeout comes first"
        );
    }
    assert_eq!(longer.retire_age(idle), idle);
}
