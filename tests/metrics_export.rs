//! `/metrics`: the spec's ten names with the values the test caused, `promtool check
//! metrics`, a real Prometheus server scraping the proxy, and the Grafana dashboard's
//! queries against the exposition.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const SPEC_NAMES: [&str; 10] = [
    "sssonector_pool_active_connections",
    "sssonector_pool_idle_connections",
    "sssonector_pool_connection_errors",
    "sssonector_pool_health_check_failures",
    "sssonector_buffer_pool_size",
    "sssonector_buffer_pool_utilization",
    "sssonector_buffer_allocation_rate",
    "sssonector_connection_errors_total",
    "sssonector_connection_timeouts_total",
    "sssonector_health_check_failures_total",
];

/// Listener l0 in front of an echo upstream, listener l1 in front of a closed port; one
/// worker, 64 buffer slots, 4 warm connections per endpoint (`max_idle` is the proxy-wide
/// total, spread over the two endpoints), 1 s metrics interval.
fn proxy_with_admin(echo: SocketAddr, refused: SocketAddr) -> (TestProxy, SocketAddr) {
    let mut proxy = start_proxy_with(
        &[&[echo], &[refused]],
        1,
        "  pool:\n    max_idle: 8\n    max_retries: 0\n    retry_interval: 100ms\n\
         \x20 health_check:\n    interval: 200ms\n    timeout: 100ms\n    fall: 2\n\
         \x20 buffer:\n    size: 16384\n    max_pool_size: 64\n\
         \x20 monitoring:\n    metrics_interval: 1s\n    listen: 127.0.0.1:0\n",
    );
    let admin = proxy.start_admin();
    (proxy, admin)
}

fn value(samples: &[Sample], name: &str) -> f64 {
    sample(samples, name, "").unwrap_or_else(|| panic!("{name} missing"))
}

fn session(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("echo");
    c
}

#[test]
fn the_spec_metrics_match_what_the_test_did() {
    let echo = Upstream::echo();
    let refused = closed_port();
    let (proxy, admin) = proxy_with_admin(echo.addr, refused);
    let l0 = proxy.addrs[0];

    // Five open sessions; the pool of the echo endpoint refills to its 4.
    let sessions: Vec<TcpStream> = (0..5).map(|_| session(l0)).collect();
    let s = scrape_until(admin, "5 active sessions and 4 idle", |s| {
        sample(s, "sssonector_pool_active_connections", "") == Some(5.0)
            && sample(s, "sssonector_pool_idle_connections", "") == Some(4.0)
    });
    assert_eq!(value(&s, "sssonector_buffer_pool_size"), 64.0);
    let echo_label = format!("endpoint=\"{}\"", echo.addr);
    assert_eq!(
        sample(&s, "sssonector_endpoint_active_sessions", &echo_label),
        Some(5.0)
    );

    // The refused endpoint: a client's dial fails; probes fail and mark it down.
    let mut c = TcpStream::connect(proxy.addrs[1]).expect("connect l1");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "closed, no data"
    );
    let refused_label = format!("endpoint=\"{refused}\"");
    let s = scrape_until(admin, "errors and health failures", |s| {
        sample(s, "sssonector_endpoint_up", &refused_label) == Some(0.0)
            && sample(s, "sssonector_pool_connection_errors", "").unwrap_or(0.0) >= 1.0
            && sample(s, "sssonector_pool_health_check_failures", "").unwrap_or(0.0) >= 1.0
    });
    let stats = proxy.stats();
    let t = &stats.total;
    assert!(
        t.connection_failures >= 1,
        "the test's client gave up: {t:?}"
    );
    // The counters are the proxy's own, as the handle reports them.
    assert!(
        value(&s, "sssonector_connection_errors_total")
            <= (t.upstream_connect_errors + t.client_errors + t.upstream_errors) as f64
    );
    assert!(value(&s, "sssonector_connection_errors_total") >= 1.0);
    assert!(
        value(&s, "sssonector_health_check_failures_total") >= 2.0,
        "fall: 2"
    );
    assert_eq!(value(&s, "sssonector_connection_timeouts_total"), 0.0);
    let failed_checks = sample(
        &s,
        "sssonector_endpoint_health_check_failures_total",
        &refused_label,
    );
    assert!(failed_checks.unwrap_or(0.0) >= 2.0);
    assert_eq!(
        sample(
            &s,
            "sssonector_endpoint_health_check_failures_total",
            &echo_label
        ),
        Some(0.0)
    );
    drop(sessions);
    scrape_until(admin, "sessions closed", |s| {
        sample(s, "sssonector_pool_active_connections", "") == Some(0.0)
    });

    // A bulk transfer: slots are in use while it runs, and the allocation rate of a
    // window that saw it is the allocations of that window per second.
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = bulk_echo(l0, stop.clone());
    let s = scrape_until(admin, "utilization and allocation rate", |s| {
        sample(s, "sssonector_buffer_pool_utilization", "").unwrap_or(0.0) > 0.0
            && sample(s, "sssonector_buffer_allocation_rate", "").unwrap_or(0.0) > 0.0
    });
    let utilization = value(&s, "sssonector_buffer_pool_utilization");
    assert!(utilization <= 1.0, "{utilization}");
    let rate = value(&s, "sssonector_buffer_allocation_rate");
    let total = value(&s, "sssonector_buffer_allocations_total");
    assert!(
        rate <= total,
        "a 1 s window cannot see more than all of them: {rate} {total}"
    );
    stop.store(true, Ordering::Release);
    let moved = bulk.join().expect("bulk thread");
    assert!(moved > 0);
    // Per endpoint: the 5 one-byte sessions and the bulk one, every byte both ways.
    let bytes = (5 + moved) as f64;
    scrape_until(admin, "per-endpoint bytes and sessions", |s| {
        sample(s, "sssonector_endpoint_sent_bytes_total", &echo_label) == Some(bytes)
            && sample(s, "sssonector_endpoint_received_bytes_total", &echo_label) == Some(bytes)
            && sample(s, "sssonector_endpoint_sessions_total", &echo_label) == Some(6.0)
            && sample(s, "sssonector_endpoint_sessions_total", &refused_label) == Some(0.0)
    });
    for name in SPEC_NAMES {
        assert!(sample(&s, name, "").is_some(), "{name}");
    }
    proxy.stop();
}

/// Sends a pattern through the echo listener until `stop`, checking every byte that comes
/// back; returns the bytes checked.
fn bulk_echo(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let conn = TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = conn.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let mut conn = conn;
            let mut pattern = Pattern::new(7);
            let mut chunk = vec![0u8; 64 * 1024];
            let mut sent = 0u64;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                pattern.fill(&mut chunk);
                conn.write_all(&chunk).expect("write");
                sent += chunk.len() as u64;
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
            sent
        });
        let mut expect = Pattern::new(7);
        let mut want = vec![0u8; 64 * 1024];
        let mut got = vec![0u8; 64 * 1024];
        let mut checked = 0u64;
        let mut offset = 64 * 1024;
        loop {
            let n = reader.read(&mut got).expect("read");
            if n == 0 {
                break;
            }
            for &b in &got[..n] {
                if offset == want.len() {
                    expect.fill(&mut want);
                    offset = 0;
                }
                assert_eq!(b, want[offset], "byte {checked} differs");
                offset += 1;
                checked += 1;
            }
        }
        let sent = writer.join().expect("writer");
        assert_eq!(checked, sent, "every byte came back");
        checked
    })
}

fn scrape_text(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    body
}

#[test]
fn promtool_accepts_the_exposition() {
    if !have_tool("promtool", "prometheus") {
        return;
    }
    let echo = Upstream::echo();
    let (proxy, admin) = proxy_with_admin(echo.addr, closed_port());
    let _s = session(proxy.addrs[0]);
    // A scrape with every kind of series present: endpoints probed, histograms filled.
    scrape_until(admin, "a probe and a connect", |s| {
        s.iter()
            .any(|x| x.name == "sssonector_endpoint_last_health_check_age_seconds")
            && sample(s, "sssonector_upstream_connect_duration_seconds_count", "").unwrap_or(0.0)
                > 0.0
    });
    let text = scrape_text(admin);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.stop();
}

/// Kills the Prometheus child when the test ends, passing or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_prometheus_server_scrapes_the_proxy() {
    if !have_tool("prometheus", "prometheus") {
        return;
    }
    let echo = Upstream::echo();
    let (proxy, admin) = proxy_with_admin(echo.addr, closed_port());
    let sessions: Vec<TcpStream> = (0..3).map(|_| session(proxy.addrs[0])).collect();
    scrape_until(admin, "3 active", |s| {
        sample(s, "sssonector_pool_active_connections", "") == Some(3.0)
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: sssonector\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let web = free_port();
    let _prom = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = "/api/v1/query?query=sssonector_pool_active_connections";
    loop {
        let targets = http_get(web, "/api/v1/targets")
            .map(|r| r.1)
            .unwrap_or_default();
        let result = http_get(web, query).map(|r| r.1).unwrap_or_default();
        let up = serde_json::from_str::<serde_json::Value>(&targets)
            .ok()
            .and_then(|v| {
                let t = v["data"]["activeTargets"].as_array()?.first()?.clone();
                Some(t["health"] == "up")
            })
            .unwrap_or(false);
        let value = serde_json::from_str::<serde_json::Value>(&result)
            .ok()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(String::from)
            });
        if up && value.as_deref() == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never reported the target up with 3 active sessions:\n{targets}\n{result}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(sessions);
    proxy.stop();
}

/// Metric names a PromQL expression refers to.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("sssonector_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(e.to_string()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/monitoring/grafana/dashboards/sssonector.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard parses");
    let templating = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        templating
            .iter()
            .any(|t| t["type"] == "datasource" && t["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "{all:?}");

    let echo = Upstream::echo();
    let (proxy, admin) = proxy_with_admin(echo.addr, closed_port());
    let _s = session(proxy.addrs[0]);
    let text = scrape_text(admin);
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for expr in &all {
        for name in names_in(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&name.as_str()) || exported.contains(&base),
                "the dashboard queries {name}, which /metrics does not have (in `{expr}`)"
            );
        }
    }
    for name in SPEC_NAMES {
        assert!(
            all.iter().any(|e| e.contains(name)),
            "the dashboard shows {name}"
        );
    }
    proxy.stop();
}

#[test]
fn every_metric_is_in_the_operations_reference() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    for name in sssonector::telemetry::metric_names() {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/operations.md"
        );
    }
}

#[test]
fn an_idle_session_closed_by_its_timeout_is_counted_as_a_timeout() {
    let echo = Upstream::echo();
    let mut proxy = start_proxy_with(
        &[&[echo.addr]],
        1,
        // connection.session.idle_timeout (pool.idle_timeout only expires pooled
        // connections now).
        "  session:\n    idle_timeout: 1s\n\
         \x20 monitoring:\n    metrics_interval: 1s\n    listen: 127.0.0.1:0\n",
    );
    let admin = proxy.start_admin();
    let mut c = session(proxy.addr());
    let mut b = [0u8; 1];
    assert!(
        matches!(c.read(&mut b), Ok(0) | Err(_)),
        "closed after 1 s idle"
    );
    // The timeout is counted when the sweep closes the session, the close when its
    // last op completes: either may be published first.
    let s = scrape_until(admin, "one timeout, one close", |s| {
        sample(s, "sssonector_connection_timeouts_total", "") == Some(1.0)
            && sample(s, "sssonector_sessions_closed_total", "") == Some(1.0)
    });
    assert_eq!(
        sample(
            &s,
            "sssonector_timeouts_by_kind_total",
            "kind=\"session_idle\""
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "sssonector_session_close_reasons_total",
            "reason=\"idle_timeout\""
        ),
        Some(1.0)
    );
    proxy.stop();
}
