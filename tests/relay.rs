//! Relay behaviour: integrity under concurrency, buffer pinning, backpressure, half-close,
//! resets and refused upstreams, fd hygiene.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

#[test]
fn echo_round_trip() {
    let up = Upstream::echo();
    let proxy = start_proxy(up.addr);
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
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
    let mut c = TcpStream::connect(addr).expect("connect to proxy");
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
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
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
