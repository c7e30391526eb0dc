//! Shared helpers for the integration tests: an in-process proxy and upstream servers
//! on 127.0.0.1:0.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sssonector::{Config, ProxyHandle, StatsSnapshot};

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
    let config = Config::parse(&yaml).unwrap_or_else(|e| panic!("test config: {e}\n{yaml}"));
    let handle = sssonector::start(config).expect("proxy starts");
    let addrs = handle.listen_addrs().into_iter().map(|(_, a)| a).collect();
    TestProxy {
        handle: Some(handle),
        addrs,
    }
}

/// One worker, defaults otherwise, in front of `upstream`.
pub fn start_proxy(upstream: SocketAddr) -> TestProxy {
    start_proxy_with(&[&[upstream]], 1, "")
}

/// A test upstream: accepts on 127.0.0.1:0 and runs `serve` for each connection on its
/// own thread. Counts accepted connections.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
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
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                acc.fetch_add(1, Ordering::SeqCst);
                let serve = serve.clone();
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(conn))
                    .expect("spawn upstream conn thread");
            }
        });
        Upstream {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Echoes everything back, passes the FIN on after the data.
    pub fn echo() -> Upstream {
        Upstream::start(|mut conn| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

/// An address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
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

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads until EOF; returns the bytes, or the error that ended the stream.
pub fn read_to_end(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    conn.read_to_end(&mut out)?;
    Ok(out)
}
