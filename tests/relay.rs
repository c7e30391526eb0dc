//! Relay behaviour: integrity under concurrency, buffer pinning, backpressure, half-close,
//! resets and refused upstreams, fd hygiene.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::*;

#[test]
fn echo_round_trip() {
    let up = Upstream::echo();
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c).unwrap(), b"");
    let s = proxy.wait_for("session closed", |s| {
        s.total.sessions_total == 1 && s.total.sessions_active == 0
    });
    assert_eq!(s.total.buffer_slots_in_use, 0);
    proxy.stop();
}

/// Writes `payload` in random-sized pieces while reading the echo back; returns what came back.
fn echo_session(
    addr: std::net::SocketAddr,
    payload: std::sync::Arc<Vec<u8>>,
    seed: u64,
) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut c = connect_timed(addr).expect("connect to proxy");
    let mut w = c.try_clone().expect("clone");
    let writer = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut at = 0;
            while at < payload.len() {
                let n = rng.gen_range(1..=256 * 1024).min(payload.len() - at);
                w.write_all(&payload[at..at + n]).expect("write to proxy");
                at += n;
            }
            w.shutdown(std::net::Shutdown::Write)
                .expect("shutdown write");
        })
        .expect("spawn writer");
    let back = read_to_end(&mut c).expect("read echo");
    writer.join().expect("writer");
    back
}

fn digest(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

#[test]
fn integrity_200_concurrent_sessions() {
    use rand::{Rng, SeedableRng};
    let up = Upstream::echo();
    let proxy = start_proxy(up.addr);
    let addr = proxy.addr();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let mut sessions = Vec::new();
    for i in 0..200u64 {
        let len = rng.gen_range(1024..=4 * 1024 * 1024);
        let mut payload = vec![0u8; len];
        Pattern::new(i + 1).fill(&mut payload);
        let payload = std::sync::Arc::new(payload);
        let expected = digest(&payload);
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let back = echo_session(addr, payload, i);
                (len, back.len(), digest(&back) == expected)
            })
            .expect("spawn session");
        sessions.push(t);
    }
    for (i, t) in sessions.into_iter().enumerate() {
        let (sent, got, same) = t.join().expect("session thread");
        assert_eq!(got, sent, "session {i}: length");
        assert!(same, "session {i}: bytes differ");
    }
    let s = proxy.wait_for("all closed", |s| {
        s.total.sessions_active == 0 && s.total.sessions_total == 200
    });
    assert_eq!(s.total.buffer_slots_in_use, 0, "every slot returned");
    proxy.stop();
}

#[test]
fn one_gib_single_session() {
    const TOTAL: usize = 1 << 30;
    let up = Upstream::echo();
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut p = Pattern::new(42);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..TOTAL / buf.len() {
            p.fill(&mut buf);
            w.write_all(&buf).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut p = Pattern::new(42);
    let mut expect = vec![0u8; 1 << 20];
    let mut got = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let (mut have, mut checked) = (0usize, 0usize);
    p.fill(&mut expect);
    loop {
        let n = c.read(&mut got[have..]).unwrap();
        if n == 0 {
            break;
        }
        let end = have + n;
        assert_eq!(
            &got[have..end],
            &expect[checked..checked + n],
            "byte {} differs",
            total
        );
        total += n;
        have = end;
        checked += n;
        if have == got.len() {
            have = 0;
            checked = 0;
            p.fill(&mut expect);
        }
    }
    writer.join().unwrap();
    assert_eq!(total, TOTAL);
    proxy.stop();
}

#[test]
fn idle_sessions_hold_no_buffers() {
    const SESSIONS: usize = 2000;
    let up = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_active: 4000\n  buffer:\n    max_pool_size: 64\n",
    );
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        clients.push(connect_timed(proxy.addr()).expect("connect"));
    }
    let idle = proxy.wait_for("all sessions established", |s| {
        s.total.sessions_active == SESSIONS as u64
            && up.accepted.load(std::sync::atomic::Ordering::SeqCst) >= SESSIONS
    });
    assert_eq!(idle.total.buffer_slots_total, 64);
    assert_eq!(
        idle.total.buffer_slots_in_use, 0,
        "idle sessions hold no slot"
    );
    // Every session talks at once: 2000 directions compete for 64 slots.
    for (i, c) in clients.iter_mut().enumerate() {
        let mut msg = vec![0u8; 1024];
        Pattern::new(i as u64 + 7).fill(&mut msg);
        c.write_all(&msg).expect("write");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut msg = vec![0u8; 1024];
        Pattern::new(i as u64 + 7).fill(&mut msg);
        let mut back = vec![0u8; 1024];
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("session {i}: {e}"));
        assert_eq!(back, msg, "session {i}");
    }
    // Each session took a slot each way; the registry never had more than its 64.
    let s = proxy.wait_for("counters published", |s| {
        s.total.buffer_allocations >= 2 * SESSIONS as u64
    });
    assert_eq!(s.total.buffer_slots_total, 64);
    assert!(
        s.total.buffer_waits > 0,
        "the ENOBUFS wait list was exercised: {s:#?}"
    );
    drop(clients);
    let s = proxy.wait_for("all closed", |s| s.total.sessions_active == 0);
    assert_eq!(
        s.total.buffer_slots_in_use, 0,
        "every slot came back: {s:#?}"
    );
    proxy.stop();
}

#[test]
fn slow_reader_holds_at_most_its_cap() {
    for cap in [1, 4] {
        slow_reader_with_cap(cap);
    }
}

fn slow_reader_with_cap(cap: u64) {
    const TOTAL: usize = 100 << 20;
    // An upstream that sends 100 MiB as soon as a client arrives.
    let source = Upstream::start(|mut conn| {
        let mut p = Pattern::new(9);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..TOTAL / buf.len() {
            p.fill(&mut buf);
            if conn.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let echo = Upstream::echo();
    let proxy = start_proxy_with(
        &[&[source.addr], &[echo.addr]],
        1,
        &format!("  buffer:\n    max_pool_size: 16\n    max_in_flight: {cap}\n"),
    );
    let mut slow = connect_timed(proxy.addrs[0]).unwrap();
    // Let the proxy fill the client's socket buffers and stall.
    std::thread::sleep(Duration::from_millis(800));
    let stalled = proxy.stats();
    assert!(stalled.total.buffer_slots_in_use <= cap, "{stalled:#?}");
    assert!(stalled.total.buffer_slots_in_use_max <= cap, "{stalled:#?}");
    assert!(
        stalled.total.bytes_upstream_to_client < TOTAL as u64,
        "the slow session is stalled"
    );
    // Meanwhile other sessions relay.
    for i in 0..20u64 {
        let mut payload = vec![0u8; 256 * 1024];
        Pattern::new(i + 100).fill(&mut payload);
        let payload = std::sync::Arc::new(payload);
        let back = echo_session(proxy.addrs[1], payload.clone(), i);
        assert!(back == *payload, "session {i} through the other listener");
    }
    // The slow reader then gets every byte, in order.
    let mut p = Pattern::new(9);
    let mut expect = vec![0u8; 1 << 20];
    let mut got = vec![0u8; 1 << 20];
    for _ in 0..TOTAL / got.len() {
        slow.read_exact(&mut got).unwrap();
        p.fill(&mut expect);
        assert!(got == expect);
    }
    assert_eq!(read_to_end(&mut slow).unwrap().len(), 0);
    proxy.stop();
}

#[test]
fn client_half_close_passes_fin_and_keeps_the_other_way() {
    // The upstream reads until EOF, then answers with what it counted and closes.
    let up = Upstream::start(|mut conn| {
        let got = read_to_end(&mut conn).map(|b| b.len()).unwrap_or(0);
        let _ = conn.write_all(format!("got {got}").as_bytes());
    });
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    c.write_all(&vec![7u8; 300_000]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_to_end(&mut c).unwrap();
    assert_eq!(answer, b"got 300000");
    proxy.wait_for("closed", |s| {
        s.total.sessions_total == 1 && s.total.sessions_active == 0
    });
    drop(c);
    proxy.stop();
}

#[test]
fn upstream_half_close_passes_fin_and_keeps_the_other_way() {
    // The upstream greets, closes its sending side, then still reads everything.
    let (tx, rx) = std::sync::mpsc::channel();
    let up = Upstream::start(move |mut conn| {
        if conn.write_all(b"banner").is_err() || conn.shutdown(std::net::Shutdown::Write).is_err() {
            return;
        }
        // Pooled connections the proxy closed unused (the FIN looks like a server
        // closing them) read nothing; only the client's connection reports.
        if let Ok(got) = read_to_end(&mut conn) {
            if !got.is_empty() {
                let _ = tx.send(got);
            }
        }
    });
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    assert_eq!(
        read_to_end(&mut c).unwrap(),
        b"banner",
        "data, then the FIN"
    );
    // Our sending side still works after the upstream's FIN.
    c.write_all(b"after the fin").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, b"after the fin");
    proxy.wait_for("closed", |s| {
        s.total.sessions_total == 1 && s.total.sessions_active == 0
    });
    proxy.stop();
}

#[test]
fn refused_upstream_closes_the_client_promptly() {
    // Without retries (their spacing is tested with the pool), a refused dial closes the
    // client at once.
    let proxy = start_proxy_with(&[&[closed_port()]], 1, "  pool:\n    max_retries: 0\n");
    let started = std::time::Instant::now();
    let mut c = connect_timed(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(matches!(r, Ok(0)) || r.is_err(), "closed, got {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "promptly: {:?}",
        started.elapsed()
    );
    let s = proxy.wait_for("error counted", |s| {
        s.total.connection_failures == 1 && s.total.sessions_active == 0
    });
    assert_eq!(s.total.sessions_total, 1);
    drop(c);
    proxy.stop();
}

#[test]
fn client_reset_resets_the_upstream() {
    let (tx, rx) = std::sync::mpsc::channel();
    let up = Upstream::start(move |mut conn| {
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        // Wait for what the client's RST becomes on this side.
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = conn.read(&mut [0u8; 16]);
        tx.send(r.map_err(|e| e.kind())).unwrap();
    });
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    c.write_all(b"hello").unwrap();
    proxy.wait_for("relayed", |s| s.total.bytes_client_to_upstream == 5);
    reset(&c);
    drop(c);
    let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        r,
        Err(std::io::ErrorKind::ConnectionReset),
        "the reset is passed on"
    );
    let s = proxy.wait_for("closed", |s| {
        s.total.sessions_active == 0 && s.total.sessions_total == 1
    });
    assert_eq!(s.total.client_errors, 1);
    proxy.stop();
}

#[test]
fn upstream_reset_resets_the_client() {
    let up = Upstream::start(|mut conn| {
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        reset(&conn);
    });
    let proxy = start_proxy(up.addr);
    let mut c = connect_timed(proxy.addr()).unwrap();
    c.write_all(b"hello").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = c.read(&mut [0u8; 16]);
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    let s = proxy.wait_for("closed", |s| {
        s.total.sessions_active == 0 && s.total.sessions_total == 1
    });
    assert_eq!(s.total.upstream_errors, 1);
    drop(c);
    proxy.stop();
}

/// 40 sessions of up to 1 MiB each, byte-exact, through a proxy with `connection` settings.
fn integrity_with(workers: usize, connection: &str) -> sssonector::StatsSnapshot {
    use rand::{Rng, SeedableRng};
    let up = Upstream::echo();
    let proxy = start_proxy_with(&[&[up.addr]], workers, connection);
    let addr = proxy.addr();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(workers as u64);
    let threads: Vec<_> = (0..40u64)
        .map(|i| {
            let mut payload = vec![0u8; rng.gen_range(1..=1 << 20)];
            Pattern::new(i + 3).fill(&mut payload);
            let payload = std::sync::Arc::new(payload);
            std::thread::spawn(move || echo_session(addr, payload.clone(), i) == *payload)
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert!(
            t.join().unwrap(),
            "session {i} ({connection:?}) not byte-exact"
        );
    }
    // A zero-copy send's slot comes back with its notification, which may follow the
    // session's close: wait for it too (a leaked slot never comes back and fails here).
    let s = proxy.wait_for(&format!("every slot returned ({connection:?})"), |s| {
        s.total.sessions_total == 40
            && s.total.sessions_active == 0
            && s.total.buffer_slots_in_use == 0
    });
    proxy.stop();
    s
}

#[test]
fn every_send_mode_relays_byte_exact() {
    for mode in ["send", "fixed", "zerocopy", "auto"] {
        let s = integrity_with(1, &format!("  buffer:\n    send_mode: {mode}\n"));
        // `fixed` and registered zero-copy need the registered buffers: without them
        // both quietly fall back to plain sends and this would test nothing new.
        // Only io_uring registers buffers; epoll sends every mode plainly.
        if memlock_allows(&s) && s.data_plane == sssonector::driver::DataPlane::IoUring {
            assert!(s.buffers_registered, "{mode}: buffers registered: {s:#?}");
        }
    }
}

/// Whether this process may lock the default pool's worth of memory (root, or a large
/// `RLIMIT_MEMLOCK`); when it may not, registration failing is the documented fallback.
fn memlock_allows(s: &sssonector::StatsSnapshot) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let need = s.total.buffer_slots_total * 65536;
    let allowed = root || (ok && (lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= need * 2));
    if !allowed {
        eprintln!(
            "skipping the registration check: RLIMIT_MEMLOCK is {} bytes",
            lim.rlim_cur
        );
    }
    allowed
}

#[test]
fn two_workers_share_the_load() {
    let s = integrity_with(2, "  buffer:\n    max_pool_size: 100\n");
    assert_eq!(s.per_worker.len(), 2);
    assert!(
        s.per_worker.iter().all(|w| w.buffer_slots_total == 50),
        "ceil(100 / 2) each: {s:#?}"
    );
    assert!(
        s.per_worker.iter().all(|w| w.sessions_total > 0),
        "SO_REUSEPORT spreads clients: {s:#?}"
    );
}
