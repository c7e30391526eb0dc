//! A real server-first server behind the pool: MariaDB greets every new connection, then
//! closes any connection on which the client has not answered within `connect_timeout`.
//! A pooled connection that idled past that has a greeting waiting in its receive buffer
//! and is already closed by the server: handing it to a client gives the client the
//! greeting and then a reset. The `mariadb` client, through a pool that idled past the
//! timeout, must see every query succeed.
//!
//! Needs `mariadbd` and `mariadb-install-db` (mariadb-server) and `mariadb`
//! (mariadb-client); skips without them, fails without them under `CI=true`.
//! `mariadb-slap` runs too when it is there.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use support::*;

/// The server's `connect_timeout` (seconds; MariaDB's minimum is 2).
const CONNECT_TIMEOUT_S: u64 = 2;
/// How long the pool sits unused before each round of clients: past `connect_timeout`, so
/// the server has closed every connection the pool holds by then.
const IDLE: Duration = Duration::from_millis(3000);
const MAX_IDLE: usize = 8;
const WORKERS: usize = 2;
const SEQUENTIAL_CLIENTS: usize = 12;
const CONCURRENT_CLIENTS: usize = 8;
/// Queries each concurrent client runs, each a separate `mariadb` process (a new session).
const QUERIES_PER_CONCURRENT_CLIENT: usize = 2;
/// Limit for any one client process, so a regression fails instead of hanging.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);

/// A `mariadbd` on 127.0.0.1 with a throwaway datadir; killed on drop, panics included.
struct MariaDb {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl MariaDb {
    fn start(mariadbd: &Path, install_db: &Path, client: &Path) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("sssonector-mariadb-")
            .tempdir()
            .expect("temp dir for the datadir");
        let datadir = dir.path().join("data");
        // A small redo log: the default 96 MiB is written out in full at install.
        let innodb = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=16M"];
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .args(["--user=root", "--auth-root-authentication-method=normal"])
            .arg("--skip-test-db")
            .args(innodb);
        let out = run_bounded(install, Duration::from_secs(60)).expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The kernel picks a free port; mariadbd binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-networking=0"])
            .arg(format!("--connect-timeout={CONNECT_TIMEOUT_S}"))
            // No passwords, no DNS: the test is about connections, not accounts.
            .args(["--skip-grant-tables", "--skip-name-resolve", "--user=root"])
            .args(innodb)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of this process. The
        // server dies with the thread that started it even if this process is killed before
        // Drop runs (a test timeout, SIGKILL), so no mariadbd outlives the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("mariadbd starts");
        let mut server = MariaDb {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        server.wait_ready(client);
        server
    }

    /// Waits until a real query succeeds (the port accepts before InnoDB is up).
    fn wait_ready(&mut self, client: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mariadbd exited at start ({status}): {}", self.log_tail());
            }
            let last = match query(client, self.addr, "select 1") {
                Ok(out) if out == "1" => return,
                Ok(out) => format!("unexpected output {out:?}"),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "mariadbd not ready within 30 s ({last}): {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // SIGKILL: the datadir is thrown away, so a clean InnoDB shutdown buys nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to completion, killing it after `limit`. Its output must fit in the pipes
/// (64 KiB each): they are read after it exits.
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{:?} still running after {limit:?}",
                    cmd.get_program()
                ));
            }
            Err(e) => return Err(format!("waiting for {:?}: {e}", cmd.get_program())),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading the output of {:?}: {e}", cmd.get_program()))
}

/// The connection options `mariadb` and `mariadb-slap` share: TCP to `addr` as root, no
/// option files.
fn connect_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "--no-defaults".into(),
        "--protocol=TCP".into(),
        "-h".into(),
        addr.ip().to_string(),
        "-P".into(),
        addr.port().to_string(),
        "-u".into(),
        "root".into(),
    ]
}

/// One `mariadb` session running `sql`; its output without column names, trimmed.
fn query(client: &Path, addr: SocketAddr, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(client);
    // No silent reconnect: it would hide a connection lost after the greeting.
    cmd.args(connect_args(addr))
        .args(["--connect-timeout=5", "--skip-reconnect", "--batch"])
        .args(["--skip-column-names", "-e", sql]);
    let out = run_bounded(cmd, CLIENT_LIMIT)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a query whose answer only the server computes, checks the answer, and returns a
/// line describing the failure, if any.
fn checked_query(client: &Path, addr: SocketAddr, n: usize, server_port: u16) -> Option<String> {
    let expected = format!("{}\t{server_port}", n * 7);
    match query(client, addr, &format!("select {n} * 7, @@port")) {
        Ok(out) if out == expected => None,
        Ok(out) => Some(format!("query {n}: got {out:?}, expected {expected:?}")),
        Err(e) => Some(format!("query {n}: {e}")),
    }
}

fn find_slap() -> Option<PathBuf> {
    find_tool("mariadb-slap").or_else(|| find_tool("mysqlslap"))
}

#[test]
fn the_mariadb_client_works_through_a_pool_that_idled_past_connect_timeout() {
    let (Some(mariadbd), Some(install_db), Some(client)) = (
        tool_path("mariadbd", "mariadb-server"),
        tool_path("mariadb-install-db", "mariadb-server"),
        tool_path("mariadb", "mariadb-client"),
    ) else {
        return;
    };
    let server = MariaDb::start(&mariadbd, &install_db, &client);
    let port = server.addr.port();

    // The harness itself: the same client through the proxy with no pool.
    let direct = start_proxy_with(&[&[server.addr]], 1, "  pool:\n    enabled: false\n");
    for n in 0..3 {
        if let Some(e) = checked_query(&client, direct.addr(), n, port) {
            panic!("through the proxy without a pool (harness check): {e}");
        }
    }
    direct.stop();

    let proxy = start_proxy_with(
        &[&[server.addr]],
        WORKERS,
        // retry_interval under the server's connect_timeout: redials that keep the pool
        // warm against it are not spaced out (see docs/configuration.md).
        &format!("  pool:\n    max_idle: {MAX_IDLE}\n    retry_interval: 500ms\n"),
    );
    proxy.wait_for("pool warm", |s| s.pool.idle == MAX_IDLE as u64);
    let mut failures = Vec::new();

    std::thread::sleep(IDLE);
    for n in 0..SEQUENTIAL_CLIENTS {
        if let Some(e) = checked_query(&client, proxy.addr(), n, port) {
            failures.push(format!("sequential {e}"));
        }
    }

    // Long enough for the connections refilled after the sequential round to die too.
    std::thread::sleep(IDLE);
    let start_together = Arc::new(Barrier::new(CONCURRENT_CLIENTS));
    let threads: Vec<_> = (0..CONCURRENT_CLIENTS)
        .map(|c| {
            let (client, addr, start) = (client.clone(), proxy.addr(), start_together.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..QUERIES_PER_CONCURRENT_CLIENT)
                    .filter_map(|q| {
                        let n = 1000 + c * QUERIES_PER_CONCURRENT_CLIENT + q;
                        checked_query(&client, addr, n, port)
                    })
                    .map(|e| format!("concurrent client {c}: {e}"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        failures.extend(t.join().expect("client thread"));
    }

    if let Some(slap) = find_slap() {
        std::thread::sleep(IDLE);
        let mut cmd = Command::new(slap);
        cmd.args(connect_args(proxy.addr())).args([
            "--concurrency=4",
            "--iterations=2",
            "--number-of-queries=40",
            "--auto-generate-sql",
            "--create-schema=sssonector_slap",
        ]);
        match run_bounded(cmd, CLIENT_LIMIT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => failures.push(format!(
                "mariadb-slap: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => failures.push(format!("mariadb-slap: {e}")),
        }
    } else {
        eprintln!("mariadb-slap not installed: its round is skipped");
    }

    let stats = proxy.stats();
    assert!(
        failures.is_empty(),
        "{} client(s) failed after the pool idled {IDLE:?} past the server's {CONNECT_TIMEOUT_S} s \
         connect_timeout:\n{}\ncounters: {:#?}\npool: {:?}\nmariadbd log:\n{}",
        failures.len(),
        failures.join("\n"),
        stats.total,
        stats.pool,
        server.log_tail()
    );
    // Otherwise the test would pass without a single client using the pool.
    assert!(
        stats.total.pool_hits >= 1,
        "no session took a pooled connection: {:#?}\npool: {:?}",
        stats.total,
        stats.pool
    );
    proxy.stop();
}
