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
