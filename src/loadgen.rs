//! Load generator behind `sssonector demo` and the benchmarks: request/response, bulk and idle-session loads, and the echo, sink and source upstreams they run against.
//!
//! Each load runs on a tokio current-thread runtime created inside a blocking call, so the
//! generator costs one core at most: the machines we measure on have two, shared with the
//! proxy under test and the upstreams. Each upstream server runs on its own thread for the
//! same reason, and keeps per-connection memory small so 4000 idle sessions stay cheap.
//!
//! Protocols of the built-in upstreams (loopback only, bound to `127.0.0.1:0`):
//! - echo: writes back what it reads; on EOF it half-closes its side.
//! - sink: discards what it reads; on EOF it writes the byte count it received (8 bytes,
//!   little endian) and closes, so a sender can confirm delivery end to end.
//! - source: reads an 8-byte little-endian count N, writes N bytes, closes. The client asks
//!   first so the source never writes into a connection no client owns yet (a proxy's warm
//!   pooled upstream connection would otherwise look like a server that speaks first).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const MIB: f64 = 1024.0 * 1024.0;

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn timed_out(what: &str, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} did not finish within {limit:?}"),
    )
}

/// Runs `fut` on a fresh current-thread runtime with an overall time limit.
fn block_on_limited<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    runtime()?.block_on(async {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| timed_out(what, limit))?
    })
}

// ---------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------

/// Sub-bucket bits: 32 linear sub-buckets per power of two, so a bucket spans at most ~3% of
/// its values, in constant memory whatever the run length.
const SUB_BITS: u32 = 5;
const SUB_MASK: u64 = (1 << SUB_BITS) - 1;

/// A log-linear histogram of nanosecond values.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; 64 << SUB_BITS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v <= SUB_MASK {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS here
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) & SUB_MASK;
        ((u64::from(shift + 1) << SUB_BITS) | mantissa) as usize
    }

    /// The largest value that lands in bucket `idx`.
    fn upper_bound(idx: usize) -> u64 {
        let bucket = (idx as u64) >> SUB_BITS;
        let m = (idx as u64) & SUB_MASK;
        if bucket == 0 {
            return m;
        }
        let shift = bucket - 1;
        (((1 << SUB_BITS) | m) << shift) + ((1u64 << shift) - 1)
    }

    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's bound (never above max).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper_bound(idx).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.total,
            p50: Duration::from_nanos(self.quantile(0.50)),
            p90: Duration::from_nanos(self.quantile(0.90)),
            p99: Duration::from_nanos(self.quantile(0.99)),
            max: Duration::from_nanos(self.max),
        }
    }
}

/// Latency percentiles of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  max {}",
            fmt_latency(self.p50),
            fmt_latency(self.p90),
            fmt_latency(self.p99),
            fmt_latency(self.max)
        )
    }
}

/// A latency in the unit that keeps it readable: `87 µs`, `1.24 ms`, `2.50 s`.
pub fn fmt_latency(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

// ---------------------------------------------------------------------------------------------
// Request/response
// ---------------------------------------------------------------------------------------------

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

/// What a request/response run measured.
#[derive(Debug, Clone)]
pub struct RrReport {
    pub connections: usize,
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub elapsed: Duration,
    pub latency: LatencySummary,
}

impl RrReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
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
        // Vary the bytes per connection and per request so a misrouted or stale reply is caught.
        let seed = id.wrapping_mul(131).wrapping_add(done);
        for (k, b) in req.iter_mut().enumerate() {
            *b = seed.wrapping_add(k as u64) as u8;
        }
        let t = Instant::now();
        s.write_all(&req).await?;
        s.read_exact(&mut resp).await?;
        hist.record(t.elapsed().as_nanos() as u64);
        if resp != req {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("connection {id}: response {done} differs from its request"),
            ));
        }
        done += 1;
    }
    Ok((done, hist))
}

// ---------------------------------------------------------------------------------------------
// Bulk
// ---------------------------------------------------------------------------------------------

/// Which way a bulk stream flows, and what the target must be in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    /// Send `bytes` to a sink, half-close, wait for the sink's byte count.
    Sink,
    /// Ask a source for `bytes` and read them.
    Source,
    /// Send `bytes` to an echo server while reading them back.
    Echo,
}

/// One stream moving `bytes` through the target.
#[derive(Debug, Clone)]
pub struct Bulk {
    pub target: SocketAddr,
    pub mode: BulkMode,
    pub bytes: u64,
    /// Size of each write / read buffer.
    pub chunk: usize,
    pub timeout: Duration,
}

impl Bulk {
    pub fn new(target: SocketAddr, mode: BulkMode, bytes: u64) -> Bulk {
        Bulk {
            target,
            mode,
            bytes,
            chunk: 256 * 1024,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What a bulk run measured.
#[derive(Debug, Clone)]
pub struct BulkReport {
    pub mode: BulkMode,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The byte count the sink acknowledged (sink mode only).
    pub confirmed: Option<u64>,
    pub elapsed: Duration,
}

impl BulkReport {
    /// Bytes that crossed the proxy in the measured direction.
    pub fn transferred(&self) -> u64 {
        match self.mode {
            BulkMode::Sink => self.confirmed.unwrap_or(0),
            BulkMode::Source | BulkMode::Echo => self.bytes_received,
        }
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.transferred() as f64 / MIB / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs one bulk stream; the byte counts are checked, so a short transfer is an error.
pub fn bulk(cfg: &Bulk) -> io::Result<BulkReport> {
    if cfg.chunk == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "chunk is 0"));
    }
    block_on_limited("bulk transfer", cfg.timeout, bulk_async(cfg))
}

async fn bulk_async(cfg: &Bulk) -> io::Result<BulkReport> {
    let mut s = TcpStream::connect(cfg.target).await?;
    let start = Instant::now();
    let (sent, received, confirmed) = match cfg.mode {
        BulkMode::Sink => {
            let sent = write_n(&mut s, cfg.bytes, cfg.chunk).await?;
            s.shutdown().await?;
            let mut ack = Vec::with_capacity(8);
            s.read_to_end(&mut ack).await?;
            let ack: [u8; 8] = ack.as_slice().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "sink answered {} bytes instead of its 8-byte count \
                         (does the proxy relay half-close?)",
                        ack.len()
                    ),
                )
            })?;
            (sent, 0, Some(u64::from_le_bytes(ack)))
        }
        BulkMode::Source => {
            s.write_all(&cfg.bytes.to_le_bytes()).await?;
            let got = read_n(&mut s, cfg.bytes, cfg.chunk).await?;
            (8, got, None)
        }
        BulkMode::Echo => {
            let (mut r, mut w) = s.split();
            let (sent, got) = tokio::try_join!(
                write_n(&mut w, cfg.bytes, cfg.chunk),
                read_n(&mut r, cfg.bytes, cfg.chunk)
            )?;
            (sent, got, None)
        }
    };
    let elapsed = start.elapsed();
    let report = BulkReport {
        mode: cfg.mode,
        bytes_sent: sent,
        bytes_received: received,
        confirmed,
        elapsed,
    };
    if report.transferred() != cfg.bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bulk {:?}: {} of {} bytes arrived",
                cfg.mode,
                report.transferred(),
                cfg.bytes
            ),
        ));
    }
    Ok(report)
}

async fn write_n<W: AsyncWrite + Unpin>(w: &mut W, n: u64, chunk: usize) -> io::Result<u64> {
    let buf: Vec<u8> = (0..chunk).map(|i| i as u8).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk as u64) as usize;
        w.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    w.flush().await?;
    Ok(n)
}

/// Reads exactly `n` bytes; EOF before that is an error.
async fn read_n<R: AsyncRead + Unpin>(r: &mut R, n: u64, chunk: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(chunk as u64) as usize;
        let k = r.read(&mut buf[..want]).await?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {got} of {n} bytes"),
            ));
        }
        got += k as u64;
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------------
// Idle sessions
// ---------------------------------------------------------------------------------------------

/// Connections opened at once while establishing idle sessions: enough to be quick, few
/// enough not to overflow a listen backlog (nginx's default is 511).
const IDLE_CONCURRENCY: usize = 64;

/// Opens `count` connections to an echo target, sends one small message through each and
/// reads it back (so each session is established end to end, upstream included), and
/// returns the open sockets. Drop them to close the sessions.
pub fn idle_sessions(
    target: SocketAddr,
    count: usize,
    timeout: Duration,
) -> io::Result<Vec<std::net::TcpStream>> {
    block_on_limited("opening idle sessions", timeout, async move {
        let mut out = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        let mut next = 0usize;
        loop {
            while next < count && tasks.len() < IDLE_CONCURRENCY {
                tasks.spawn(open_session(target, next));
                next += 1;
            }
            match tasks.join_next().await {
                Some(joined) => {
                    let s = joined
                        .map_err(|e| io::Error::other(format!("session task failed: {e}")))??;
                    // Leave the runtime's reactor: the socket must outlive this runtime.
                    out.push(s.into_std()?);
                }
                None => break,
            }
        }
        Ok(out)
    })
}

async fn open_session(target: SocketAddr, id: usize) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let msg = format!("hello {id:08}\n");
    s.write_all(msg.as_bytes()).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("session {id}: echo differs from what was sent"),
        ));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Upstream servers
// ---------------------------------------------------------------------------------------------

/// Which built-in upstream to run; see the module docs for their protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Echo,
    Sink,
    Source,
}

/// Totals an upstream server keeps (bytes it read and wrote, connections it accepted).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A built-in upstream server running on its own thread; stops when dropped.
pub struct Upstream {
    kind: ServerKind,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Binds `127.0.0.1:0` and starts serving on a new thread.
    pub fn start(kind: ServerKind) -> io::Result<Upstream> {
        let rt = runtime()?;
        let listener = {
            // Binding with a registered tokio listener needs the runtime's reactor.
            let _enter = rt.enter();
            let sock = TcpSocket::new_v4()?;
            sock.set_reuseaddr(true)?;
            sock.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))?;
            // A deep backlog: benchmarks open thousands of sessions in quick bursts.
            sock.listen(4096)?
        };
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name(format!("{kind:?}-upstream").to_lowercase())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, kind, thread_stats) => {}
                    }
                });
                // Dropping the runtime here cancels every connection task and closes its socket.
            })?;
        Ok(Upstream {
            kind,
            addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops accepting, closes every connection and joins the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

async fn accept_loop(listener: TcpListener, kind: ServerKind, stats: Arc<ServerStats>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                stats.connections.fetch_add(1, Relaxed);
                let _ = s.set_nodelay(true);
                let stats = Arc::clone(&stats);
                tokio::spawn(async move {
                    // A peer that resets is normal at the end of a benchmark; nothing to report.
                    let _ = match kind {
                        ServerKind::Echo => serve_echo(s, &stats).await,
                        ServerKind::Sink => serve_sink(s, &stats).await,
                        ServerKind::Source => serve_source(s, &stats).await,
                    };
                });
            }
            // Out of descriptors or similar: back off instead of spinning on a shared core.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_echo(mut s: TcpStream, stats: &ServerStats) -> io::Result<()> {
    // Start small (thousands of idle sessions must stay cheap) and grow once a stream
    // proves to be bulk.
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        stats.bytes_in.fetch_add(n as u64, Relaxed);
        s.write_all(&buf[..n]).await?;
        stats.bytes_out.fetch_add(n as u64, Relaxed);
        if n == buf.len() && buf.len() < 256 * 1024 {
            buf.resize(buf.len() * 4, 0);
        }
    }
}

async fn serve_sink(mut s: TcpStream, stats: &ServerStats) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        stats.bytes_in.fetch_add(n as u64, Relaxed);
    }
    s.write_all(&total.to_le_bytes()).await?;
    stats.bytes_out.fetch_add(8, Relaxed);
    s.shutdown().await
}

async fn serve_source(mut s: TcpStream, stats: &ServerStats) -> io::Result<()> {
    let mut req = [0u8; 8];
    s.read_exact(&mut req).await?;
    stats.bytes_in.fetch_add(8, Relaxed);
    let n = u64::from_le_bytes(req);
    let chunk = 256 * 1024;
    let buf: Vec<u8> = (0..chunk).map(|i| i as u8).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk as u64) as usize;
        s.write_all(&buf[..k]).await?;
        stats.bytes_out.fetch_add(k as u64, Relaxed);
        left -= k as u64;
    }
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [
            0u64,
            1,
            31,
            32,
            63,
            64,
            65,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 3,
        ] {
            let idx = Histogram::index(v);
            assert!(Histogram::upper_bound(idx) >= v, "v={v}");
            // Within ~3% (one sub-bucket) of the value.
            assert!(Histogram::upper_bound(idx) - v <= v / 32 + 1, "v={v}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let p50 = s.p50.as_nanos() as f64;
        assert!((500_000.0..=520_000.0).contains(&p50), "p50={p50}");
        assert_eq!(s.max, Duration::from_micros(1000));
    }
}
