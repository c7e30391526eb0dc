//! `sssonector healthcheck`, the container HEALTHCHECK: exit 0 with the URL it asked when
//! the admin server answers 200, exit 1 with the URL and the cause otherwise (nothing
//! listening, a 503 from `/readyz`, no answer within the timeout).

mod support;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .arg("healthcheck")
        .args(args)
        .env("SSSONECTOR_LOG", "warn")
        .output()
        .expect("run sssonector healthcheck")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_running_proxy_is_healthy_and_ready_and_the_probe_reads_the_config() {
    let echo = Upstream::echo();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "listeners:\n  - name: app\n    listen: 127.0.0.1:0\n    upstreams: [{}]\n\
         workers: 1\nconnection:\n  monitoring:\n    listen: 127.0.0.1:0\n",
        echo.addr
    );
    let mut proxy = BinaryProxy::start(&yaml, dir.path());
    let admin = proxy.addr_from_log("admin server listening");
    let flag = admin.to_string();
    let out = healthcheck(&["--admin-listen", &flag]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains(&format!("http://{admin}/healthz")),
        "{}",
        said(&out)
    );
    // /readyz turns 200 once the endpoint's first probe has passed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = healthcheck(&["--admin-listen", &flag, "--ready"]);
        if out.status.success() {
            assert!(said(&out).contains("/readyz"), "{}", said(&out));
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {}", said(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The address from a config file's connection.monitoring.listen.
    let file = dir.path().join("probe.yaml");
    std::fs::write(
        &file,
        format!("connection:\n  monitoring:\n    listen: {admin}\n"),
    )
    .expect("write");
    let out = healthcheck(&["--config", &file.to_string_lossy()]);
    assert!(out.status.success(), "{}", said(&out));
}

#[test]
fn nothing_listening_fails_naming_the_address() {
    let closed = closed_port();
    let out = healthcheck(&["--admin-listen", &closed.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let text = said(&out);
    assert!(text.contains(&format!("http://{closed}/healthz")), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn a_proxy_without_a_healthy_endpoint_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "listeners:\n  - name: app\n    listen: 127.0.0.1:0\n    upstreams: [{}]\n\
         workers: 1\nconnection:\n  monitoring:\n    listen: 127.0.0.1:0\n",
        closed_port()
    );
    let mut proxy = BinaryProxy::start(&yaml, dir.path());
    let admin = proxy.addr_from_log("admin server listening").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = healthcheck(&["--admin-listen", &admin, "--ready"]);
        let text = said(&out);
        if text.contains("no healthy endpoint") {
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(text.contains("503"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = healthcheck(&["--admin-listen", &admin]);
    assert!(out.status.success(), "alive all the same: {}", said(&out));
}

#[test]
fn a_server_that_never_answers_fails_within_the_timeout() {
    // Accepts (the kernel completes the handshake) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let started = Instant::now();
    let out = healthcheck(&["--admin-listen", &addr, "--timeout", "300ms"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("timed out"), "{}", said(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(silent);
}

#[test]
fn an_unreadable_config_fails_naming_the_file() {
    let out = healthcheck(&["--config", "/nonexistent/sssonector.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        said(&out).contains("/nonexistent/sssonector.yaml"),
        "{}",
        said(&out)
    );
}
