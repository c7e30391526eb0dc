//! SIGHUP through the real binary: a changed upstream list under load keeps the sessions
//! in flight byte-exact, sends new sessions to the new endpoint and drains the old pool;
//! an invalid file or a change that needs a restart leaves the old config running.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

fn config(upstream: SocketAddr, listen: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: {listen}\n    upstreams: [{upstream}]\n\
         workers: 2\n\
         connection:\n  pool:\n    max_idle: 4\n\
         \x20 health_check:\n    interval: 200ms\n    timeout: 100ms\n\
         \x20 monitoring:\n    metrics_interval: 1s\n    listen: 127.0.0.1:0\n\
         shutdown:\n  drain_delay: 0s\n  grace_period: 5s\n"
    )
}

fn echo_once(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"ping").expect("write");
    let mut b = [0u8; 4];
    c.read_exact(&mut b).expect("echo");
    assert_eq!(&b, b"ping");
    c
}

fn endpoint(addr: SocketAddr) -> String {
    format!("endpoint=\"{addr}\"")
}

#[test]
fn sighup_switches_upstreams_under_load_and_keeps_the_old_config_on_errors() {
    let old = Upstream::echo();
    let new = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sssonector.yaml");
    let mut proxy = BinaryProxy::start(&config(old.addr, "127.0.0.1:0"), dir.path());
    let addr = proxy.addr_from_log("listening listener=web");
    let admin = proxy.addr_from_log("admin server listening");
    scrape_until(admin, "the old endpoint's pool warm", |s| {
        sample(
            s,
            "sssonector_endpoint_idle_connections",
            &endpoint(old.addr),
        ) == Some(4.0)
    });

    // Ten transfers of about 3 s each through the old endpoint.
    let transfers: Vec<_> = (0..10).map(|i| paced_transfer(addr, i + 1, 64)).collect();
    scrape_until(admin, "10 sessions on the old endpoint", |s| {
        sample(
            s,
            "sssonector_endpoint_active_sessions",
            &endpoint(old.addr),
        ) == Some(10.0)
    });

    std::fs::write(&path, config(new.addr, "127.0.0.1:0")).expect("rewrite config");
    proxy.signal("-HUP");
    let line = proxy.wait_for_line("configuration reloaded", 1);
    assert!(line.contains(&new.addr.to_string()), "{line}");

    // New sessions go to the new endpoint (its pool warms at once).
    let fresh: Vec<TcpStream> = (0..5).map(|_| echo_once(addr)).collect();
    let s = scrape_until(
        admin,
        "5 sessions on the new endpoint, the old pool empty",
        |s| {
            sample(
                s,
                "sssonector_endpoint_active_sessions",
                &endpoint(new.addr),
            ) == Some(5.0)
                && sample(
                    s,
                    "sssonector_endpoint_idle_connections",
                    &endpoint(old.addr),
                )
                .unwrap_or(0.0)
                    == 0.0
        },
    );
    assert!(
        sample(
            &s,
            "sssonector_endpoint_idle_connections",
            &endpoint(new.addr)
        )
        .is_some(),
        "the new endpoint is exported"
    );
    // From now on (dials and probes begun before the reload have landed) nothing new
    // reaches the old endpoint: no session, no pool dial, no health probe.
    std::thread::sleep(Duration::from_millis(300));
    let accepted_by_old = old.accepted();
    // The old endpoint's pool drained: what it still has open are the transfers.
    eventually("the old endpoint keeps only the sessions in flight", || {
        old.open() <= 10
    });
    for t in transfers {
        t.join()
            .expect("a transfer through the old endpoint failed");
    }
    assert_eq!(
        old.accepted(),
        accepted_by_old,
        "no new connection to the old endpoint"
    );
    eventually("the old endpoint's connections are gone", || {
        old.open() == 0
    });
    drop(fresh);

    // An invalid file: the error `check` prints is logged; the old config keeps running.
    std::fs::write(
        &path,
        config(new.addr, "127.0.0.1:0").replace("max_idle: 4", "max_idle: many"),
    )
    .expect("write invalid config");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("sssonector check");
    let check_err = String::from_utf8_lossy(&check.stderr);
    let check_err = check_err.trim().trim_start_matches("sssonector: ");
    assert!(!check.status.success() && !check_err.is_empty());
    proxy.signal("-HUP");
    let line = proxy.wait_for_line("reload rejected", 1);
    assert!(line.contains(check_err), "{line}\nvs check: {check_err}");
    assert_eq!(http_get(admin, "/readyz").expect("readyz").0, 200);
    drop(echo_once(addr));

    // A listener address change needs a restart: refused, the old config keeps running.
    std::fs::write(&path, config(new.addr, "127.0.0.1:1")).expect("write config");
    proxy.signal("-HUP");
    let line = proxy.wait_for_line("need a restart", 1);
    assert!(line.contains("listeners[0].listen"), "{line}");
    assert_eq!(http_get(admin, "/readyz").expect("readyz").0, 200);
    drop(echo_once(addr));

    proxy.signal("-TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let log = proxy.log_text();
    assert!(status.is_some_and(|s| s.success()), "{log}");
}

#[test]
fn a_reload_raises_max_active_and_the_waiting_client_is_served() {
    let echo = Upstream::echo();
    let conn = |max_active: usize| {
        format!("  pool:\n    max_idle: 1\n    max_active: {max_active}\n    queue_timeout: 30s\n")
    };
    let proxy = start_proxy_with(&[&[echo.addr]], 1, &conn(1));
    let mut first = echo_once(proxy.addr());
    let mut second = TcpStream::connect(proxy.addr()).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    second.write_all(b"wait").expect("write");
    proxy.wait_for("the second client queued", |s| s.queued == 1);

    let handle = proxy.handle.as_ref().expect("running");
    handle
        .reloader()
        .reload(test_config(&[&[echo.addr]], 1, &conn(2)))
        .expect("reload applies");
    let mut b = [0u8; 4];
    second.read_exact(&mut b).expect("served after the reload");
    assert_eq!(&b, b"wait");
    // The session that held the only slot is untouched.
    first.write_all(b"more").expect("write");
    first.read_exact(&mut b).expect("echo");
    assert_eq!(&b, b"more");
    let s = proxy.stats();
    assert_eq!((s.admitted, s.queued), (2, 0));
    proxy.stop();
}

#[test]
fn a_reload_that_changes_the_worker_count_is_refused_whole() {
    let echo = Upstream::echo();
    let other = Upstream::echo();
    let proxy = start_proxy_with(&[&[echo.addr]], 1, "");
    let handle = proxy.handle.as_ref().expect("running");
    let err = handle
        .reloader()
        .reload(test_config(&[&[other.addr]], 2, ""))
        .expect_err("refused");
    assert!(err.to_string().contains("workers 1 -> 2"), "{err}");
    // Nothing of it applied: the upstream did not change.
    drop(echo_once(proxy.addr()));
    assert_eq!(other.accepted(), 0);
    proxy.stop();
}

/// The warm pool is one for the proxy: a reload spreads `max_idle` again over the
/// endpoints in service (a new one warms at once), closes a removed endpoint's idle
/// connections without replacing them, and `enabled: false` closes them all.
#[test]
fn a_reload_reshares_the_shared_pool_and_flushes_a_removed_endpoint() {
    use sssonector::upstream::Discard;
    let a = Upstream::echo();
    let b = Upstream::echo();
    let pool = |max_idle: usize, enabled: bool| {
        format!("  pool:\n    enabled: {enabled}\n    max_idle: {max_idle}\n")
    };
    let idle_of = |s: &sssonector::StatsSnapshot, addr: SocketAddr| {
        s.endpoints
            .iter()
            .find(|e| e.addr == addr)
            .map_or(0, |e| e.idle)
    };
    let proxy = start_proxy_with(&[&[a.addr]], 2, &pool(4, true));
    proxy.wait_for("4 idle on a", |s| s.pool.idle == 4);
    let reload = |upstreams: &[SocketAddr], max_idle, enabled| {
        proxy
            .handle
            .as_ref()
            .expect("running")
            .reloader()
            .reload(test_config(&[upstreams], 2, &pool(max_idle, enabled)))
            .expect("reload applies");
    };

    reload(&[a.addr, b.addr], 6, true);
    let s = proxy.wait_for("b warmed to its share of 3", |s| idle_of(s, b.addr) == 3);
    assert_eq!(idle_of(&s, a.addr), 4, "a keeps its idle connections");

    reload(&[b.addr], 6, true);
    let s = proxy.wait_for("a flushed, b at the whole 6", |s| {
        idle_of(s, a.addr) == 0 && idle_of(s, b.addr) == 6
    });
    assert_eq!(s.pool.discarded(Discard::Flushed), 4, "{:?}", s.pool);
    eventually("a's pooled connections are closed, none redialed", || {
        a.open() == 0
    });
    let accepted = a.accepted();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.accepted(), accepted, "no refill of a removed endpoint");

    reload(&[b.addr], 6, false);
    let s = proxy.wait_for("every idle connection closed", |s| s.pool.idle == 0);
    assert_eq!(s.pool.discarded(Discard::Flushed), 10, "{:?}", s.pool);
    drop(echo_once(proxy.addr()));
    let s = proxy.stats();
    assert_eq!((s.total.pool_hits, s.pool.idle), (0, 0), "the pool is off");
    proxy.stop();
}

fn health_conn(health: &str) -> String {
    format!(
        "  pool:\n    max_idle: 2\n\
         \x20 health_check:\n{health}    interval: 200ms\n    timeout: 100ms\n    fall: 2\n    rise: 1\n\
         \x20 monitoring:\n    metrics_interval: 1s\n    listen: 127.0.0.1:0\n"
    )
}

fn scrape(admin: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").expect("scrape");
    sample(&parse_exposition(&body), name, "").unwrap_or(-1.0)
}

/// Counters only grow: a reload that removes a down endpoint (with failed probes) must
/// not take its failures out of `sssonector_health_check_failures_total`. It was summed
/// over the endpoints the snapshot shows, and a retired endpoint with no sessions and no
/// idle connections is not shown.
#[test]
fn health_check_failures_total_does_not_drop_when_a_reload_removes_an_endpoint() {
    let up = Upstream::echo();
    let dead = closed_port();
    let mut proxy = start_proxy_with(&[&[up.addr, dead]], 1, &health_conn(""));
    let admin = proxy.start_admin();
    let name = "sssonector_health_check_failures_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while scrape(admin, name) < 5.0 {
        assert!(std::time::Instant::now() < deadline, "no failed probes");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Probes of the remaining endpoint stop too, so `after` is comparable.
    let new = test_config(&[&[up.addr]], 1, &health_conn("    enabled: false\n"));
    let before = scrape(admin, name);
    let handle = proxy.handle.as_ref().expect("running");
    let outcome = handle.reloader().reload(new).expect("reload");
    assert_eq!(outcome.retired, vec![dead], "{outcome:?}");
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(admin, name);
    let per_endpoint = http_get(admin, "/metrics").expect("scrape").1;
    proxy.stop();
    assert!(
        after >= before,
        "{name} went backwards: {before} -> {after}"
    );
    assert!(
        !per_endpoint.contains(&format!("endpoint=\"{dead}\"")),
        "the retired endpoint's own series are gone"
    );
}

/// Two spellings of one address are one endpoint: validation rejects them (see
/// tests/config_errors.rs), and a config that skips validation still gets one id per
/// address, so a reload of the unchanged config retires nothing. Before, both got an id
/// at start, the reload found the first id for both and retired the second.
#[test]
fn a_reload_of_an_unchanged_config_with_one_address_twice_retires_nothing() {
    let up = Upstream::echo();
    let mut config = test_config(&[&[up.addr]], 1, "");
    let l = &mut config.listeners[0];
    l.upstreams.push(format!("127.1:{}", up.addr.port()));
    l.resolved.push(up.addr);
    let handle = sssonector::start(config.clone()).expect("start");
    let endpoints = handle.stats().endpoints.len();
    let outcome = handle.reloader().reload(config).expect("reload");
    handle.shutdown().expect("stop");
    assert_eq!(endpoints, 1, "one endpoint per address");
    assert!(outcome.retired.is_empty(), "retired {:?}", outcome.retired);
    assert!(outcome.added.is_empty(), "added {:?}", outcome.added);
}
