//! The request/response load: N connections, one request in flight each, every response checked.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use sssonector_loopback::{check_response, fill_request};

use super::*;

/// N connections, each sending a `payload`-byte request and reading `payload` bytes back
/// (the target must echo), one request in flight per connection.
#[derive(Debug, Clone)]
pub struct RequestResponse {
    pub target: SocketAddr,
    pub connections: usize,
    pub payload: usize,
    /// Stop after this long (measured from when every connection is established).
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub requests: Option<u64>,
    /// Hard limit on the whole run, connection setup included.
    pub timeout: Duration,
}

impl RequestResponse {
    pub fn new(target: SocketAddr, connections: usize, payload: usize) -> RequestResponse {
        RequestResponse {
            target,
            connections,
            payload,
            duration: None,
            requests: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Runs a request/response load; every response is checked against its request.
pub fn request_response(cfg: &RequestResponse) -> io::Result<RrReport> {
    if cfg.connections == 0 || cfg.payload == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "request/response needs at least one connection and a non-empty payload",
        ));
    }
    if cfg.duration.is_none() && cfg.requests.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "request/response needs a duration or a request count",
        ));
    }
    block_on_limited("request/response load", cfg.timeout, rr_async(cfg))
}

async fn rr_async(cfg: &RequestResponse) -> io::Result<RrReport> {
    // Connect everything first so connection setup stays out of the timed part.
    let mut streams = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        let s = TcpStream::connect(cfg.target).await?;
        // Small requests must leave at once, not wait for Nagle.
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let tickets = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut tasks = JoinSet::new();
    for (id, s) in streams.into_iter().enumerate() {
        tasks.spawn(rr_connection(
            s,
            id as u64,
            cfg.payload,
            deadline,
            cfg.requests,
            Arc::clone(&tickets),
        ));
    }
    let mut hist = Histogram::new();
    let mut requests = 0;
    while let Some(joined) = tasks.join_next().await {
        // A failed connection fails the run (dropping `tasks` aborts the others): a proxy
        // that drops sessions under load must not be reported as fast.
        let (n, h) = joined.map_err(|e| io::Error::other(format!("load task failed: {e}")))??;
        requests += n;
        hist.merge(&h);
    }
    let elapsed = start.elapsed();
    let bytes = requests * cfg.payload as u64;
    Ok(RrReport {
        connections: cfg.connections,
        requests,
        bytes_sent: bytes,
        bytes_received: bytes,
        elapsed,
        latency: hist.summary(),
    })
}

async fn rr_connection(
    mut s: TcpStream,
    id: u64,
    payload: usize,
    deadline: Option<Instant>,
    limit: Option<u64>,
    tickets: Arc<AtomicU64>,
) -> io::Result<(u64, Histogram)> {
    let mut req = vec![0u8; payload];
    let mut resp = vec![0u8; payload];
    let mut hist = Histogram::new();
    let mut done: u64 = 0;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // A shared ticket counter makes a count-limited run stop at exactly `limit`.
        if limit.is_some_and(|l| tickets.fetch_add(1, Relaxed) >= l) {
            break;
        }
        fill_request(&mut req, id, done);
        let t = Instant::now();
        s.write_all(&req).await?;
        s.read_exact(&mut resp).await?;
        hist.record(t.elapsed().as_nanos() as u64);
        check_response(&req, &resp, id, done)?;
        done += 1;
    }
    Ok((done, hist))
}
