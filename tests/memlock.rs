//! The memlock fallback: with a locked-memory limit (1 MiB) that fits the ring but not the
//! 64 MB buffer region, and no
//! CAP_IPC_LOCK, the proxy warns once, runs with unregistered buffers and plain sends, and
//! still relays byte-exact. Runs the real binary under `prlimit` (and `setpriv` as root).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use support::*;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn memlock_fallback_still_relays() {
    if !have_tool("prlimit", "util-linux") || !have_tool("setpriv", "util-linux") {
        return;
    }
    let up = Upstream::echo();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--memlock=1048576:1048576").arg("--");
    if is_root() {
        // Root bypasses the memlock charge through CAP_IPC_LOCK; drop it for the child.
        cmd.args([
            "setpriv",
            "--bounding-set=-ipc_lock",
            "--inh-caps=-ipc_lock",
            "--",
        ]);
    }
    let mut child = cmd
        .arg(env!("CARGO_BIN_EXE_sssonector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up.addr.to_string(),
            "--workers",
            "1",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("SSSONECTOR_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sssonector under prlimit");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut warning = None;
    let mut addr: Option<SocketAddr> = None;
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if line.contains("cannot register") {
            warning = Some(line.clone());
        }
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
    }
    // The warning comes from the worker once it starts; read on until it shows.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = addr.expect("the proxy logs its listen address");
    let mut payload = vec![0u8; 8 << 20];
    Pattern::new(5).fill(&mut payload);
    let payload = Arc::new(payload);
    let mut c = connect_timed(addr).expect("connect");
    let mut w = c.try_clone().unwrap();
    let p = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&p).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let back = read_to_end(&mut c).expect("echo");
    writer.join().unwrap();
    assert!(back == *payload, "byte-exact through unregistered buffers");
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.or_else(|| rx.try_iter().find(|l| l.contains("cannot register")));
    let warning = warning.expect("one memlock warning");
    assert!(
        warning.contains("locked-memory limit is 1048576 bytes"),
        "{warning}"
    );
    assert!(
        warning.contains("memlock"),
        "the warning says how to fix it: {warning}"
    );
}
