//! The built-in upstreams: echo, sink and source servers, each one thread running one event loop.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

/// Which built-in upstream to run; see the crate docs for their protocols.
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
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// An echo connection's first buffer: thousands of idle sessions must stay cheap.
const ECHO_FIRST: usize = 4096;
/// The largest buffer anything here reads or writes with.
const CHUNK: usize = 256 * 1024;

impl Upstream {
    /// Binds `127.0.0.1:0` and starts serving on a new thread.
    pub fn start(kind: ServerKind) -> io::Result<Upstream> {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).into())?;
        // A deep backlog: benchmarks open thousands of sessions in quick bursts.
        sock.listen(4096)?;
        sock.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(sock.into());
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stats = Arc::new(ServerStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            kind,
            poll,
            listener,
            conns: Slab::new(),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            scratch: vec![0; CHUNK],
            pattern: (0..CHUNK).map(|i| i as u8).collect(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{kind:?}-upstream").to_lowercase())
            // Returning drops every connection, which closes its socket.
            .spawn(move || server.run())?;
        Ok(Upstream {
            kind,
            addr,
            stats,
            stop,
            waker,
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
        self.stop.store(true, Relaxed);
        // Should the wake fail, the loop still sees the flag within its poll timeout.
        let _ = self.waker.wake();
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

/// The event loop's state; lives on the server's thread.
struct Server {
    kind: ServerKind,
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    /// What a sink reads into (one thread: one buffer for every connection).
    scratch: Vec<u8>,
    /// What a source sends: byte i of a stream is `i as u8`.
    pattern: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    state: State,
}

enum State {
    /// `buf[sent..filled]` is still to be written back; `eof` once the client half-closed.
    Echo {
        buf: Vec<u8>,
        sent: usize,
        filled: usize,
        eof: bool,
    },
    /// Bytes received so far; after EOF, `ack_sent` bytes of the 8-byte count are written.
    Sink { total: u64, ack_sent: Option<usize> },
    /// The 8-byte request (`got` bytes of it), then `left` bytes to send from offset `sent`.
    Source {
        req: [u8; 8],
        got: usize,
        sent: u64,
        left: Option<u64>,
    },
}

/// What a connection needs after an event: more events, or to be closed.
enum Next {
    Wait,
    Close,
}

impl Server {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        // Set when accept failed (out of descriptors, say): retry soon instead of spinning
        // on a shared core, and instead of waiting for an edge that may not come.
        let mut accept_retry = false;
        while !self.stop.load(Relaxed) {
            let timeout = if accept_retry {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(500)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if accept_retry || events.iter().any(|e| e.token() == LISTENER) {
                accept_retry = !self.accept_all();
            }
            for ev in events.iter() {
                let key = ev.token().0;
                if ev.token() == LISTENER || ev.token() == WAKER {
                    continue;
                }
                let next = match self.conns.get_mut(key) {
                    Some(c) => c.drive(&self.stats, &mut self.scratch, &self.pattern),
                    None => continue,
                };
                if let Next::Close = next {
                    let mut c = self.conns.remove(key);
                    let _ = self.poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }

    /// Accepts until the backlog is empty (true) or accept fails (false).
    fn accept_all(&mut self) -> bool {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            self.stats.connections.fetch_add(1, Relaxed);
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let token = Token(entry.key());
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue; // dropped: the client sees the connection close
            }
            let state = match self.kind {
                ServerKind::Echo => State::Echo {
                    buf: vec![0; ECHO_FIRST],
                    sent: 0,
                    filled: 0,
                    eof: false,
                },
                ServerKind::Sink => State::Sink {
                    total: 0,
                    ack_sent: None,
                },
                ServerKind::Source => State::Source {
                    req: [0; 8],
                    got: 0,
                    sent: 0,
                    left: None,
                },
            };
            entry.insert(Conn { stream, state });
        }
    }
}

impl Conn {
    /// Makes all the progress the socket allows now (readiness is edge-triggered, so every
    /// path ends on `WouldBlock` or on the end of the connection).
    fn drive(&mut self, stats: &ServerStats, scratch: &mut [u8], pattern: &[u8]) -> Next {
        // A peer that resets is normal at the end of a benchmark; nothing to report.
        match self.step(stats, scratch, pattern) {
            Ok(next) => next,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Wait,
            Err(_) => Next::Close,
        }
    }

    fn step(
        &mut self,
        stats: &ServerStats,
        scratch: &mut [u8],
        pattern: &[u8],
    ) -> io::Result<Next> {
        let s = &mut self.stream;
        match &mut self.state {
            State::Echo {
                buf,
                sent,
                filled,
                eof,
            } => loop {
                while *sent < *filled {
                    let n = write_some(s, &buf[*sent..*filled])?;
                    *sent += n;
                    stats.bytes_out.fetch_add(n as u64, Relaxed);
                }
                if *eof {
                    s.shutdown(Shutdown::Write)?;
                    return Ok(Next::Close);
                }
                // A read that filled the buffer marks a bulk stream: grow it.
                if *filled == buf.len() && buf.len() < CHUNK {
                    let bigger = buf.len() * 4;
                    buf.resize(bigger, 0);
                }
                let n = retry(|| s.read(buf))?;
                stats.bytes_in.fetch_add(n as u64, Relaxed);
                (*sent, *filled, *eof) = (0, n, n == 0);
            },
            State::Sink { total, ack_sent } => {
                while ack_sent.is_none() {
                    match retry(|| s.read(scratch))? {
                        0 => *ack_sent = Some(0),
                        n => {
                            *total += n as u64;
                            stats.bytes_in.fetch_add(n as u64, Relaxed);
                        }
                    }
                }
                let ack = total.to_le_bytes();
                while let Some(done @ 0..=7) = *ack_sent {
                    let n = write_some(s, &ack[done..])?;
                    *ack_sent = Some(done + n);
                    stats.bytes_out.fetch_add(n as u64, Relaxed);
                }
                s.shutdown(Shutdown::Write)?;
                Ok(Next::Close)
            }
            State::Source {
                req,
                got,
                sent,
                left,
            } => {
                while *got < req.len() {
                    match retry(|| s.read(&mut req[*got..]))? {
                        0 => return Ok(Next::Close), // closed before asking
                        n => *got += n,
                    }
                    if *got == req.len() {
                        stats.bytes_in.fetch_add(8, Relaxed);
                        *left = Some(u64::from_le_bytes(*req));
                    }
                }
                while let Some(l @ 1..) = *left {
                    let at = (*sent % CHUNK as u64) as usize;
                    let k = (l.min((CHUNK - at) as u64)) as usize;
                    let n = write_some(s, &pattern[at..at + k])?;
                    *sent += n as u64;
                    *left = Some(l - n as u64);
                    stats.bytes_out.fetch_add(n as u64, Relaxed);
                }
                s.shutdown(Shutdown::Write)?;
                Ok(Next::Close)
            }
        }
    }
}

/// Retries `op` on `EINTR`.
fn retry(mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One write of a non-empty `buf`; taking nothing is an error, not a reason to spin.
fn write_some(s: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    match retry(|| s.write(buf))? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}
