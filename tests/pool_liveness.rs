//! The warm pool never hands a client a connection its server closed: servers that greet
//! first and close connections nobody speaks on (FIN or RST, greeting queued or not),
//! the learned unclaimed-connection lifetime, and one pool across workers.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sssonector::upstream::Discard;
use support::*;

const GREETING: &[u8] = b"220 greeter ready\r\n";

/// How a [`greeter`] ends a connection nobody spoke on.
#[derive(Debug, Clone, Copy)]
struct Unclaimed {
    greet: bool,
    reset: bool,
    after: Duration,
}

/// A server-first upstream: greets at once (when `greet`), closes a connection that has
/// not sent a byte within `after` (FIN, or RST when `reset`), and echoes otherwise.
/// Counts the connections it closed that way.
fn greeter(mode: Unclaimed) -> (Upstream, Arc<AtomicUsize>) {
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    let up = Upstream::start(move |mut conn| {
        if mode.greet && conn.write_all(GREETING).is_err() {
            return;
        }
        let mut first = [0u8; 1];
        let _ = conn.set_read_timeout(Some(mode.after));
        match conn.read(&mut first) {
            Ok(1) => {
                let _ = conn.set_read_timeout(None);
                if conn.write_all(&first).is_ok() {
                    echo_conn(conn);
                }
            }
            // The proxy closed it (retired, expired, shut down).
            Ok(_) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                counter.fetch_add(1, Ordering::SeqCst);
                if mode.reset {
                    reset(&conn);
                }
                drop(conn);
            }
        }
    });
    (up, closed)
}

/// One client: the intact greeting first (when the server greets), then a byte-exact echo.
fn greeted_echo(proxy: std::net::SocketAddr, greet: bool, tag: usize) -> Result<(), String> {
    let mut c = connect_timed(proxy).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    if greet {
        let mut g = vec![0u8; GREETING.len()];
        c.read_exact(&mut g)
            .map_err(|e| format!("client {tag}: greeting: {e}"))?;
        if g != GREETING {
            return Err(format!("client {tag}: greeting {g:?}"));
        }
    }
    let msg = format!("hello from client {tag}\n").repeat(50);
    c.write_all(msg.as_bytes())
        .map_err(|e| format!("client {tag}: write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back)
        .map_err(|e| format!("client {tag}: echo: {e}"))?;
    if back != msg.as_bytes() {
        return Err(format!("client {tag}: echo differs"));
    }
    Ok(())
}

#[test]
fn connections_the_server_closed_in_the_pool_never_reach_a_client() {
    let after = Duration::from_millis(500);
    for (greet, reset) in [(true, false), (true, true), (false, false), (false, true)] {
        let mode = Unclaimed {
            greet,
            reset,
            after,
        };
        let (up, server_closed) = greeter(mode);
        // A lifetime shorter than retry_interval (5 s by default) spaces the redials
        // that only keep the pool warm by retry_interval; this one is well under it.
        let proxy = start_proxy_with(
            &[&[up.addr]],
            2,
            "  pool:\n    max_idle: 8\n    retry_interval: 100ms\n",
        );
        proxy.wait_for("pool warm", |s| s.pool.idle == 8);
        // Idle past the server's limit three times over: each round of pooled
        // connections was closed by the server, seen, and replaced.
        std::thread::sleep(after * 3 + after / 2);
        assert!(server_closed.load(Ordering::SeqCst) >= 8, "{mode:?}");
        let s = proxy.stats();
        let reason = if reset {
            Discard::Reset
        } else {
            Discard::ClosedByServer
        };
        assert!(
            s.pool.discarded(reason) >= 8,
            "{mode:?}: the watch saw the server close them: {s:#?}"
        );
        for i in 0..20 {
            greeted_echo(proxy.addr(), greet, i).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        }
        let results: Vec<Result<(), String>> = std::thread::scope(|sc| {
            let addr = proxy.addr();
            let hs: Vec<_> = (0..12)
                .map(|i| sc.spawn(move || greeted_echo(addr, greet, 100 + i)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
                .collect()
        });
        for r in results {
            r.unwrap_or_else(|e| panic!("{mode:?} concurrent: {e}"));
        }
        let s = proxy.wait_for("sessions counted", |s| s.total.sessions_total == 32);
        assert_eq!(
            s.total.client_errors + s.total.upstream_errors,
            0,
            "{mode:?}: {s:#?}"
        );
        assert!(s.total.pool_hits >= 1, "{mode:?}: {s:#?}");
        proxy.stop();
    }
}

#[test]
fn the_pool_learns_how_long_a_server_keeps_unclaimed_connections() {
    let after = Duration::from_millis(400);
    let (up, server_closed) = greeter(Unclaimed {
        greet: true,
        reset: false,
        after,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - name: db\n    listen: 127.0.0.1:0\n    upstreams: [{}]\n\
             workers: 1\nconnection:\n  pool:\n    max_idle: 4\n    retry_interval: 100ms\n",
            up.addr
        ),
    )
    .expect("config");
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .arg("--config")
        .arg(&config)
        // Not the default 127.0.0.1:9090: tests never use fixed ports.
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("SSSONECTOR_LOG", "warn")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("proxy binary");
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("closes pooled connections nobody uses"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while warnings() == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no lifetime learned; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Connections that were within a hair of the server's limit when it was learned
    // may still be closed by the server; after one more limit, none is.
    std::thread::sleep(after + after / 2);
    let closes = server_closed.load(Ordering::SeqCst);
    let accepted = up.accepted();
    std::thread::sleep(after * 5);
    let closes_after = server_closed.load(Ordering::SeqCst);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        closes_after, closes,
        "the pool retires connections before the server closes them"
    );
    assert!(
        up.accepted() >= accepted + 4,
        "retired connections are replaced"
    );
    assert_eq!(warnings(), 1, "warned once:\n{text}");
    assert!(
        text.contains(&up.addr.to_string()) && text.contains("idle_timeout below"),
        "the warning names the endpoint and the fix:\n{text}"
    );
}

#[test]
fn any_worker_hands_out_the_one_pool() {
    // Each connection tells the client when the upstream accepted it.
    let base = Instant::now();
    let waiting = Arc::new(AtomicUsize::new(0));
    let waiting_in_server = waiting.clone();
    let up = Upstream::start(move |mut conn| {
        let accepted = base.elapsed().as_micros();
        waiting_in_server.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 16];
        let first = conn.read(&mut buf);
        waiting_in_server.fetch_sub(1, Ordering::SeqCst);
        if matches!(first, Ok(n) if n > 0) {
            let _ = conn.write_all(format!("{accepted}\n").as_bytes());
        }
    });
    let mut up = up;
    // A refill the first handoff starts could otherwise serve the second client: the
    // upstream stops accepting while the clients come, and refused refills are retried
    // soon (health checks off, so they do not mark it down).
    let proxy = start_proxy_with(
        &[&[up.addr]],
        4,
        "  pool:\n    max_idle: 2\n    retry_interval: 100ms\n  health_check:\n    enabled: false\n",
    );
    for round in 0..8 {
        proxy.wait_for("pool warm", |s| s.pool.idle == 2);
        // Accepted by the server's loop, not only by the kernel: it stops accepting next.
        eventually("upstream serves the pool", || {
            waiting.load(Ordering::SeqCst) == 2
        });
        up.stop_accepting();
        let connected = base.elapsed().as_micros();
        let mut clients: Vec<TcpStream> = (0..2)
            .map(|_| connect_timed(proxy.addr()).expect("connect"))
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(b"when?").expect("write");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut reply = String::new();
            let mut byte = [0u8; 1];
            while !reply.ends_with('\n') {
                match c.read(&mut byte) {
                    Ok(1) => reply.push(byte[0] as char),
                    other => panic!("round {round} client {i}: {other:?} after {reply:?}"),
                }
            }
            let accepted: u128 = reply.trim().parse().expect("a time");
            assert!(
                accepted < connected,
                "round {round}: client {i} got a connection made before it came"
            );
        }
        drop(clients);
        up.resume_accepting();
    }
    let s = proxy.wait_for("sessions published", |s| s.total.sessions_total == 16);
    assert_eq!(s.total.pool_hits, 16, "{s:#?}");
    assert_eq!(s.total.pool_misses, 0, "{s:#?}");
    proxy.stop();
}

#[test]
fn a_server_that_closes_new_connections_at_once_is_not_redialed_in_a_loop() {
    // Banner, then FIN: to the pool this is a server closing its unclaimed connections
    // as soon as they are made.
    let up = Upstream::start(|mut conn| {
        let _ = conn.write_all(b"bye\r\n");
    });
    let proxy = start_proxy_with(
        &[&[up.addr]],
        2,
        "  pool:\n    max_idle: 4\n    retry_interval: 1s\n",
    );
    std::thread::sleep(Duration::from_millis(2500));
    // One batch at start and at most one more per retry_interval after the closes; a
    // refill in a loop would have made thousands.
    let accepted = up.accepted();
    assert!(accepted >= 4, "the pool tried: {accepted}");
    assert!(accepted <= 4 * 4, "refills back off: {accepted} connects");
    // A client still gets the banner and the FIN, through its own connection.
    let mut c = connect_timed(proxy.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_to_end(&mut c).expect("read"), b"bye\r\n");
    let s = proxy.stats();
    assert!(s.pool.discarded(Discard::ClosedByServer) >= 4, "{s:#?}");
    proxy.stop();
}

#[test]
fn a_server_that_closes_connections_soon_after_accepting_them_is_not_an_amplifier() {
    // Too old for a refused-at-once server, too young to keep warm: without a bound
    // the pool would replace each close at once, some 50 dials a second per connection,
    // with no client at all.
    let (up, _) = greeter(Unclaimed {
        greet: false,
        reset: false,
        after: Duration::from_millis(150),
    });
    let proxy = start_proxy_with(
        &[&[up.addr]],
        1,
        "  pool:\n    max_idle: 8\n    retry_interval: 1s\n",
    );
    std::thread::sleep(Duration::from_millis(3000));
    let accepted = up.accepted();
    // A connection redialed only to keep the pool warm waits retry_interval after the
    // one it replaces was made: at most 8 per second, plus the first batch.
    assert!(accepted <= 8 * 4 + 8, "{accepted} dials in 3 s");
    let s = proxy.stats();
    assert!(
        s.pool.discarded(Discard::ClosedByServer) + s.pool.discarded(Discard::Retired) >= 8,
        "{s:#?}"
    );
    proxy.stop();
}

#[test]
fn idle_connections_closed_at_shutdown_get_a_fin_not_a_reset() {
    let resets = Arc::new(AtomicUsize::new(0));
    let fins = Arc::new(AtomicUsize::new(0));
    let (r, f) = (resets.clone(), fins.clone());
    let up = Upstream::start(move |mut conn| {
        if conn.write_all(GREETING).is_err() {
            return;
        }
        let mut b = [0u8; 16];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        match conn.read(&mut b) {
            Ok(0) => f.fetch_add(1, Ordering::SeqCst),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => r.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    });
    let proxy = start_proxy_with(&[&[up.addr]], 1, "  pool:\n    max_idle: 4\n");
    proxy.wait_for("pool warm", |s| s.pool.idle == 4);
    // The greetings have arrived and sit unread in the pooled connections.
    std::thread::sleep(Duration::from_millis(200));
    proxy.stop();
    eventually("the server saw every close", || {
        resets.load(Ordering::SeqCst) + fins.load(Ordering::SeqCst) == 4
    });
    assert_eq!(
        fins.load(Ordering::SeqCst),
        4,
        "greeting discarded, then a FIN (MariaDB would log a reset as an aborted connection)"
    );
}
