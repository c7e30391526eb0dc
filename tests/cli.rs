//! The command line: `--version`, `--help`, usage errors, and `demo` end to end.

use std::process::Command;

fn sssonector(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args(args)
        .output()
        .expect("run sssonector")
}

#[test]
fn version_and_help_exit_zero() {
    let v = sssonector(&["--version"]);
    assert_eq!(v.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    let h = sssonector(&["--help"]);
    assert_eq!(h.status.code(), Some(0));
    let help = String::from_utf8_lossy(&h.stdout);
    for word in [
        "demo",
        "check",
        "--config",
        "--listen",
        "--upstream",
        "--workers",
    ] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
}

#[test]
fn usage_errors_exit_two() {
    let out = sssonector(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sssonector(&["demo", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_drives_load_and_reports_it() {
    let out = sssonector(&["demo", "--duration", "1s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in [
        "req/s", "latency", "p50", "p99", "MiB/s", "sessions", "bytes",
    ] {
        assert!(stdout.contains(what), "the report shows {what}:\n{stdout}");
    }
    assert!(!stdout.contains("load failed"), "{stdout}");
}

/// Runs the binary in front of a closed port until it logs that it listens, sends it
/// `signal`, and returns its exit code.
fn exit_code_after(signal: libc::c_int) -> Option<i32> {
    use std::io::BufRead;
    use std::process::Stdio;
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = upstream.local_addr().expect("addr").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sssonector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up,
            "--workers",
            "1",
            // Not the default 127.0.0.1:9090: tests never use fixed ports.
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("SSSONECTOR_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sssonector");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the proxy logs that it listens");
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy did not exit within 20 s of signal {signal}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    assert_eq!(exit_code_after(libc::SIGTERM), Some(0), "SIGTERM");
    assert_eq!(exit_code_after(libc::SIGINT), Some(0), "SIGINT");
}
