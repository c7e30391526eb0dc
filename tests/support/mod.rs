//! Shared helpers for the integration tests: an in-process proxy and upstream servers
//! on 127.0.0.1:0.
#![allow(dead_code)]

mod check;
pub mod docker;
mod leak;
mod process;
#[allow(unused_imports)]
pub use check::{check_file, sssonector, temp_config};
#[allow(unused_imports)]
pub use leak::{serial, Baseline};
#[allow(unused_imports)]
pub use process::BinaryProxy;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sssonector::{Config, ProxyHandle, StatsSnapshot};

/// The longest any read or write of a test (or of a test upstream) may block: a
/// regression makes the test fail with a timeout error instead of hanging. Generous, so
/// it never fires on a busy machine for a test that works.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets [`IO_TIMEOUT`] on both directions of `conn` (a test must fail, not hang).
pub fn with_timeouts(conn: TcpStream) -> TcpStream {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    conn
}

/// Connects to `addr` with [`IO_TIMEOUT`] on the connect, every read and every write.
pub fn connect_timed(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, IO_TIMEOUT).map(with_timeouts)
}

/// A proxy running in this process.
pub struct TestProxy {
    pub handle: Option<ProxyHandle>,
    pub addrs: Vec<SocketAddr>,
}

impl TestProxy {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.handle.as_ref().expect("running").stats()
    }

    /// Waits until the published counters satisfy `f` (they are published every 100 ms).
    pub fn wait_for(&self, what: &str, f: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.stats();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

/// Starts a proxy with one listener per upstream list, on 127.0.0.1:0, and `connection`
/// YAML (indented under `connection:`), e.g. `"  buffer:\n    max_pool_size: 64\n"`.
pub fn start_proxy_with(
    upstreams: &[&[SocketAddr]],
    workers: usize,
    connection: &str,
) -> TestProxy {
    let config = test_config(upstreams, workers, connection);
    let handle = sssonector::start(config).expect("proxy starts");
    let addrs = handle.listen_addrs().into_iter().map(|(_, a)| a).collect();
    TestProxy {
        handle: Some(handle),
        addrs,
    }
}

/// The config [`start_proxy_with`] runs (a reload test builds the next one the same way).
pub fn test_config(upstreams: &[&[SocketAddr]], workers: usize, connection: &str) -> Config {
    let mut yaml = String::from("listeners:\n");
    for (i, ups) in upstreams.iter().enumerate() {
        let list: Vec<String> = ups.iter().map(|a| a.to_string()).collect();
        yaml += &format!(
            "  - name: l{i}\n    listen: 127.0.0.1:0\n    upstreams: [{}]\n",
            list.join(", ")
        );
    }
    yaml += &format!("workers: {workers}\n");
    if !connection.is_empty() {
        yaml += "connection:\n";
        yaml += connection;
    }
    Config::parse(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"))
}

/// One worker, defaults otherwise, in front of `upstream`.
pub fn start_proxy(upstream: SocketAddr) -> TestProxy {
    start_proxy_with(&[&[upstream]], 1, "")
}

type Serve = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// A test upstream: accepts on 127.0.0.1:0 and runs `serve` for each connection on its
/// own thread. Counts accepted and still open connections, can stop accepting and start
/// again on the same port, and can close every open connection.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    conns: Arc<std::sync::Mutex<Vec<(usize, TcpStream)>>>,
    serve: Serve,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start<F>(serve: F) -> Upstream
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = listen_local(4096);
        let addr = listener.local_addr().expect("upstream addr");
        let mut up = Upstream {
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            conns: Arc::new(std::sync::Mutex::new(Vec::new())),
            serve: Arc::new(serve),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        up.accept_on(listener);
        up
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let (acc, open, conns, serve) = (
            self.accepted.clone(),
            self.open.clone(),
            self.conns.clone(),
            self.serve.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // A test upstream that waits forever would hang its test. Twice the
                // test's own timeout: a pooled connection may sit unread a while.
                let _ = conn.set_read_timeout(Some(2 * IO_TIMEOUT));
                let _ = conn.set_write_timeout(Some(2 * IO_TIMEOUT));
                acc.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                // A second handle, so close_open() can shut it down; dropped (and the
                // socket really closed) as soon as `serve` is done with the connection.
                let id = acc.load(Ordering::SeqCst);
                if let Ok(c) = conn.try_clone() {
                    conns.lock().expect("conns").push((id, c));
                }
                let (serve, open, conns) = (serve.clone(), open.clone(), conns.clone());
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        serve(conn);
                        conns.lock().expect("conns").retain(|(i, _)| *i != id);
                        open.fetch_sub(1, Ordering::SeqCst);
                    })
                    .expect("spawn upstream conn thread");
            }
        }));
    }

    /// Stops accepting: the port refuses connections; open connections stay.
    pub fn stop_accepting(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Accepts again on the same port.
    pub fn resume_accepting(&mut self) {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_reuse_address(true).expect("reuseaddr");
        s.bind(&self.addr.into()).expect("bind the same port again");
        s.listen(4096).expect("listen");
        self.accept_on(s.into());
    }

    /// Closes every connection the upstream has (as a server that restarts would).
    pub fn close_open(&self) {
        for (_, c) in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Echoes everything back, passes the FIN on after the data.
    pub fn echo() -> Upstream {
        Upstream::start(echo_conn)
    }
}

/// The echo server's per-connection loop: the project's echo on a blocking socket.
pub fn echo_conn(conn: TcpStream) {
    if conn.read_timeout().ok().flatten().is_none() {
        let _ = conn.set_read_timeout(Some(2 * IO_TIMEOUT));
    }
    sssonector_loopback::echo_blocking(conn);
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop_accepting();
        self.close_open();
    }
}

/// Waits up to 10 s for `f` to hold.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listener on 127.0.0.1:0 with a backlog deep enough for thousands of connects at once.
pub fn listen_local(backlog: i32) -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    s.bind(&addr.into()).expect("bind");
    s.listen(backlog).expect("listen");
    s.into()
}

/// A loopback port free a moment ago (for a config that must name a real port; a test
/// that binds it itself should prefer port 0).
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An address nothing listens on, and nothing can: the port stays bound (not listening)
/// by a socket kept for the life of the test process, so no other test's server can take
/// it meanwhile and answer a dial that should be refused.
pub fn closed_port() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = s
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("addr");
    // Leaked on purpose: the port must stay taken; the process exit closes it.
    std::mem::forget(s);
    addr
}

/// A deterministic byte stream (xorshift) so a receiver can check what it gets without
/// keeping a copy.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Makes dropping `conn` send an RST instead of a FIN.
pub fn reset(conn: &TcpStream) {
    socket2::SockRef::from(conn)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

/// Waits (up to 5 s) for this process's fd count to come back to `expected`, and returns
/// the last count: connection threads of test upstreams close their sockets a little late.
pub fn settle_fds(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = open_fds();
        if n == expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This process's open fds once transient ones (a health probe, a pool dial in flight)
/// are gone: the fewest seen over a second. A baseline taken in the middle of a probe
/// round would otherwise count its sockets, and later checks would wait for them.
pub fn quiet_fds() -> usize {
    (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            open_fds()
        })
        .min()
        .unwrap_or_else(open_fds)
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads until EOF; returns the bytes, or the error that ended the stream. A socket
/// without a read timeout gets [`IO_TIMEOUT`].
pub fn read_to_end(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    if conn.read_timeout()?.is_none() {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
    }
    let mut out = Vec::new();
    conn.read_to_end(&mut out)?;
    Ok(out)
}

/// Whether an optional tool is installed. A test that needs it skips with a message when
/// it is missing, except under `CI=true`, where a missing tool fails the test.
pub fn have_tool(tool: &str, package: &str) -> bool {
    tool_path(tool, package).is_some()
}

/// Where an optional tool is, found as [`have_tool`] finds it (with the same skip message
/// and the same failure under `CI=true`). Daemons such as `mariadbd` live in `/usr/sbin`,
/// which a non-root `PATH` often lacks, so the sbin directories are searched too.
pub fn tool_path(tool: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = find_tool(tool);
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} ({package}) is required under CI"
        );
        eprintln!("skipping: {tool} ({package}) is not installed");
    }
    found
}

/// An HTTP/1.1 GET with read and write timeouts; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of head in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The labels as written, without braces (`listener="l0",endpoint="..."`).
    pub labels: String,
    pub value: f64,
}

/// Parses the samples of a text exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some(Sample {
                name: name.to_string(),
                labels: labels.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The value of the unlabelled series `name` (or the one whose labels contain `labels`).
pub fn sample(samples: &[Sample], name: &str, labels: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.contains(labels))
        .map(|s| s.value)
}

impl TestProxy {
    /// Starts the admin server (the config must say `monitoring.listen: 127.0.0.1:0`).
    pub fn start_admin(&mut self) -> SocketAddr {
        self.handle
            .as_mut()
            .expect("running")
            .start_admin()
            .expect("admin server starts")
    }
}

/// Scrapes `/metrics` until `f` holds for the parsed samples (up to 20 s).
pub fn scrape_until(admin: SocketAddr, what: &str, f: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(admin, "/metrics").expect("scrape");
        assert_eq!(status, 200, "{body}");
        let samples = parse_exposition(&body);
        if f(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where `tool` is in `PATH` or the sbin directories, quietly (for tools a test can do
/// without).
pub fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Reads until EOF or an error; returns the bytes read and how the stream ended (`fin`,
/// or the error's kind).
pub fn read_all(c: &mut TcpStream) -> (Vec<u8>, String) {
    if c.read_timeout().ok().flatten().is_none() {
        let _ = c.set_read_timeout(Some(IO_TIMEOUT));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, "fin".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, format!("{:?}", e.kind())),
        }
    }
}

/// One echo round trip of `n` pattern bytes through `addr`, byte-exact: sends them all,
/// half-closes, reads everything back. Returns how long it took.
pub fn echo_round_trip(addr: SocketAddr, n: usize, seed: u64) -> io::Result<Duration> {
    let started = Instant::now();
    let mut c = connect_timed(addr)?;
    let mut body = vec![0u8; n];
    Pattern::new(seed).fill(&mut body);
    let mut writer = c.try_clone()?;
    let send = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(&body)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let (got, end) = read_all(&mut c);
    send.join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    let mut expect = vec![0u8; n];
    Pattern::new(seed).fill(&mut expect);
    if end != "fin" || got != expect {
        return Err(io::Error::other(format!(
            "echo of {n} bytes: got {} bytes, ended by {end}, exact: {}",
            got.len(),
            got == expect
        )));
    }
    Ok(started.elapsed())
}

/// Waits (up to 10 s) until everything written on `conn` has been acknowledged by the
/// peer (`SIOCOUTQ` is 0), so an RST that follows cannot discard unsent data: a test's
/// "RST after a response" means the response left the server first.
pub fn wait_sent(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int into `queued`, which we own.
        let rc = unsafe { libc::ioctl(conn.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One transfer through an echo upstream: `chunks` chunks of 16 KiB every 50 ms, echoed
/// back and checked byte-exact; the thread returns the bytes received.
pub fn paced_transfer(
    addr: SocketAddr,
    seed: u64,
    chunks: usize,
) -> std::thread::JoinHandle<usize> {
    let conn = TcpStream::connect(addr).expect("connect");
    std::thread::spawn(move || {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut data = vec![0u8; chunks * 16 * 1024];
        Pattern::new(seed).fill(&mut data);
        let mut w = conn.try_clone().expect("clone");
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            for chunk in sent.chunks(16 * 1024) {
                w.write_all(chunk).expect("write");
                std::thread::sleep(Duration::from_millis(50));
            }
            w.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut conn = conn;
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read the echo");
        writer.join().expect("writer");
        assert!(
            got == data,
            "transfer {seed}: {} of {} bytes, or different",
            got.len(),
            data.len()
        );
        got.len()
    })
}
