//! Locked memory, step by step: the real binary under `prlimit` (and, as root, `setpriv`
//! to drop CAP_IPC_LOCK or to run as a non-root user) gets the best data plane the limit
//! allows, says which in one line, warns once naming `RLIMIT_MEMLOCK`, the limit and the
//! bytes needed, and relays byte-exact; an explicit `--data-plane io_uring` that cannot
//! run exits 1 with the cause.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::*;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Who the proxy runs as: a user id of its own, so no other process shares its
/// locked-memory account (io_uring charges RLIMIT_MEMLOCK per user, across processes:
/// root without CAP_IPC_LOCK would share it with every container the suite runs).
#[derive(Clone, Copy)]
enum As {
    User(u32),
}

struct Limited {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Limited {
    /// Reads the log until a line contains `marker`; `None` if the process ended first.
    fn line(&mut self, marker: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.log.iter().find(|l| l.contains(marker)) {
                return Some(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no `{marker}` in the log:\n{}", self.log.join("\n"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn listen_addr(&mut self) -> SocketAddr {
        let Some(line) = self.line("listening") else {
            panic!("the proxy did not start:\n{}", self.log.join("\n"));
        };
        line.split("addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in `{line}`"))
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with `memlock` bytes of locked memory, as `who`, with `args`; `None` (and a
/// message) where the tools or the privileges for it are missing.
fn start(memlock: u64, who: As, args: &[&str]) -> Option<Limited> {
    if !have_tool("prlimit", "util-linux") || !have_tool("setpriv", "util-linux") {
        return None;
    }
    let root = is_root();
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "running the proxy as another user needs root under CI"
        );
        eprintln!("skipping: running the proxy as another user needs root");
        return None;
    }
    // Another user must be able to run it: a copy in a directory anyone may enter.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("sssonector");
    std::fs::copy(env!("CARGO_BIN_EXE_sssonector"), &bin).expect("copy the binary");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--memlock={memlock}:{memlock}")).arg("--");
    match who {
        As::User(uid) => {
            let id = uid.to_string();
            cmd.args([
                "setpriv",
                "--reuid",
                &id,
                "--regid",
                &id,
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
            ]);
        }
    }
    let mut child = cmd
        .arg(&bin)
        .args(args)
        .env("SSSONECTOR_LOG", "info")
        .env_remove("SSSONECTOR_DATA_PLANE")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sssonector under prlimit");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Some(Limited {
        child,
        lines,
        log: Vec::new(),
        _dir: dir,
    })
}

fn proxy_args(up: SocketAddr, workers: &str) -> Vec<String> {
    [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up.to_string(),
        "--workers",
        workers,
        "--admin-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// 8 MiB through the proxy and back, byte-exact.
fn relays_byte_exact(addr: SocketAddr) {
    let mut payload = vec![0u8; 8 << 20];
    Pattern::new(5).fill(&mut payload);
    let payload = Arc::new(payload);
    let mut c = connect_timed(addr).expect("connect");
    let mut w = c.try_clone().expect("clone");
    let p = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&p).expect("write");
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let back = read_to_end(&mut c).expect("echo");
    writer.join().expect("writer");
    assert!(back == *payload, "byte-exact");
}

fn run(memlock: u64, who: As, workers: &str) -> Option<Limited> {
    let up = Upstream::echo();
    let args = proxy_args(up.addr, workers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = start(memlock, who, &args)?;
    let addr = p.listen_addr();
    relays_byte_exact(addr);
    // The upstream lives until here: the proxy's pool dialed it.
    drop(up);
    Some(p)
}

#[test]
fn a_limit_that_fits_the_rings_but_not_the_buffers_runs_unregistered() {
    let Some(mut p) = run(1 << 20, As::User(61000), "1") else {
        return;
    };
    let plane = p.line("data plane:").expect("the data plane line");
    assert!(plane.contains("data plane: io_uring"), "{plane}");
    assert!(plane.contains("unregistered"), "{plane}");
    let warning = p.line("RLIMIT_MEMLOCK").expect("one memlock warning");
    assert!(warning.contains("is 1048576 bytes"), "{warning}");
    assert!(warning.contains("needs"), "the bytes needed: {warning}");
    assert!(warning.contains("CAP_IPC_LOCK"), "how to fix it: {warning}");
    assert!(!warning.contains("Linux >="), "no wrong cause: {warning}");
    assert_eq!(
        p.log
            .iter()
            .filter(|l| l.contains("RLIMIT_MEMLOCK"))
            .count(),
        1,
        "warned once: {:#?}",
        p.log
    );
}

/// Docker's `--ulimit memlock=65536` for a non-root user, outside Docker: two workers
/// get io_uring with smaller rings, and the warning says why.
#[test]
fn non_root_with_docker_s_limit_serves() {
    let Some(mut p) = run(65536, As::User(61001), "2") else {
        return;
    };
    let plane = p.line("data plane:").expect("the data plane line");
    assert!(plane.contains("data plane: io_uring"), "{plane}");
    let warning = p.line("RLIMIT_MEMLOCK").expect("one memlock warning");
    assert!(warning.contains("is 65536 bytes"), "{warning}");
    assert!(warning.contains("needs"), "the bytes needed: {warning}");
    assert!(!warning.contains("Linux >="), "no wrong cause: {warning}");
}

/// Too little even for the smallest rings: epoll, with the numbers.
#[test]
fn too_little_locked_memory_falls_back_to_epoll() {
    let Some(mut p) = run(8192, As::User(61002), "2") else {
        return;
    };
    let plane = p.line("data plane:").expect("the data plane line");
    assert!(plane.contains("data plane: epoll"), "{plane}");
    let warning = p.line("RLIMIT_MEMLOCK").expect("the fallback warning");
    assert!(warning.contains("is 8192 bytes"), "{warning}");
    assert!(warning.contains("epoll"), "{warning}");
}

#[test]
fn an_explicit_io_uring_that_cannot_run_exits_1() {
    let up = Upstream::echo();
    let mut args = proxy_args(up.addr, "2");
    args.extend(["--data-plane".to_string(), "io_uring".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(mut p) = start(8192, As::User(61003), &args) else {
        return;
    };
    let status = p.child.wait().expect("wait");
    assert_eq!(status.code(), Some(1), "{:#?}", p.log);
    let why = p.line("RLIMIT_MEMLOCK").expect("the cause");
    assert!(why.contains("io_uring is unavailable"), "{why}");
    assert!(why.contains("is 8192 bytes"), "{why}");
}

/// Locked memory is charged per user, across processes: with another proxy of the same
/// user holding part of the limit, a plan that fits the limit alone does not fit what
/// is left. The start steps down to epoll (at the probe, or once a worker is refused)
/// and serves, instead of exiting.
#[test]
fn another_process_of_the_user_holding_the_limit_steps_down_to_epoll() {
    let Some(mut first) = run(49152, As::User(61010), "1") else {
        return;
    };
    let plane = first
        .line("data plane:")
        .expect("the first proxy's data plane");
    assert!(plane.contains("data plane: io_uring"), "{plane}");
    let Some(mut second) = run(65536, As::User(61010), "2") else {
        return;
    };
    let plane = second
        .line("data plane: epoll")
        .expect("the second steps down");
    assert!(plane.contains("INFO"), "{plane}");
    let why = second
        .line("the epoll data plane runs instead")
        .expect("one warning says why");
    assert!(
        why.contains("RLIMIT_MEMLOCK") || why.contains("memlock"),
        "the cause is the locked-memory limit: {why}"
    );
    drop(first);
}
