//! The built-in upstreams: echo, sink and source servers, each on its own thread.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::*;

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
