//! The admin server's front: one thread and one epoll instance accept connections and
//! read their request heads, each under its own deadline, without spending a thread on
//! any of them. A connection that sends nothing costs a file descriptor and a few bytes,
//! not a request thread, so idle or slow clients cannot starve the probes.
//!
//! With a complete head, the front answers itself what is cheap (`/healthz`, `/readyz`,
//! errors, and the 503 when every request thread is taken) and hands the rest (`/metrics`
//! and the status page) to a request thread. Every answer is written after the whole
//! head was read, then the connection is half-closed and lingers a moment reading what
//! the client still sends, so the answer arrives instead of a reset.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{self, Request, RequestError, Response};
use super::{routes, AdminState, MAX_CONNECTIONS};
use crate::driver::sys;

/// Connections the front holds at once (reading a head or lingering after an answer);
/// a new one past that closes the oldest.
pub const MAX_PENDING: usize = 512;
/// How often the loop looks at the deadlines and the stop flag.
const TICK_MS: i32 = 50;
const LISTENER: u64 = u64::MAX;
/// Bytes read from a connection that is lingering after its answer, at most.
const LINGER_BYTES: usize = 64 * 1024;

enum Phase {
    /// Reading the request head.
    Head(Vec<u8>),
    /// Answered and half-closed: swallowing what the client still sends.
    Linger { left: usize },
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    phase: Phase,
}

struct Front<'a> {
    epoll: OwnedFd,
    state: &'a Arc<AdminState>,
    /// Request threads running.
    busy: Arc<AtomicUsize>,
    /// By token: tokens only grow, so the first entry is the oldest connection.
    conns: BTreeMap<u64, Conn>,
    next_token: u64,
}

/// Runs until `stop` is set.
pub fn run(listener: TcpListener, state: &Arc<AdminState>, stop: &AtomicBool) {
    let epoll = match setup(&listener) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("admin server: cannot set up its event loop: {e}");
            return;
        }
    };
    let mut front = Front {
        epoll,
        state,
        busy: Arc::new(AtomicUsize::new(0)),
        conns: BTreeMap::new(),
        next_token: 0,
    };
    let mut failures = crate::logging::RateLimited::new(Duration::from_secs(10));
    let mut events = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = sys::epoll_wait(front.epoll.as_raw_fd(), &mut events, TICK_MS) {
            tracing::error!("admin server: epoll_wait failed: {e}");
            std::thread::sleep(Duration::from_millis(TICK_MS as u64));
        }
        for &(token, _) in &events {
            if token == LISTENER {
                front.accept(&listener, &mut failures);
            } else {
                front.readable(token);
            }
        }
        front.expire(Instant::now());
    }
}

fn setup(listener: &TcpListener) -> io::Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let epoll = sys::epoll()?;
    sys::epoll_watch_readable(epoll.as_raw_fd(), listener.as_raw_fd(), LISTENER)?;
    Ok(epoll)
}

impl Front<'_> {
    fn epfd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn accept(&mut self, listener: &TcpListener, failures: &mut crate::logging::RateLimited) {
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: keep serving, say so at most once per period,
                    // and let the condition pass instead of spinning on it.
                    if let Some(repeated) = failures.hit() {
                        tracing::warn!(repeated, "admin: accept failed: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            };
            let token = self.next_token;
            self.next_token += 1;
            if stream.set_nonblocking(true).is_err()
                || sys::epoll_watch_readable(self.epfd(), stream.as_raw_fd(), token).is_err()
            {
                continue;
            }
            let deadline = Instant::now() + http::REQUEST_DEADLINE;
            let phase = Phase::Head(Vec::new());
            self.conns.insert(
                token,
                Conn {
                    stream,
                    peer,
                    deadline,
                    phase,
                },
            );
            if self.conns.len() > MAX_PENDING {
                if let Some((_, old)) = self.conns.pop_first() {
                    tracing::debug!(peer = %old.peer, "admin client: closed for a newer one");
                    self.close(old);
                }
            }
        }
    }

    fn close(&self, c: Conn) {
        let _ = sys::epoll_unwatch(self.epfd(), c.stream.as_raw_fd());
    }

    fn readable(&mut self, token: u64) {
        let Some(mut c) = self.conns.remove(&token) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        loop {
            match (&c.stream).read(&mut chunk) {
                Ok(0) => {
                    if let Phase::Head(_) = c.phase {
                        tracing::debug!("{}", RequestError::Closed { peer: c.peer });
                    }
                    return self.close(c);
                }
                Ok(n) => match &mut c.phase {
                    Phase::Head(buf) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(parsed) = http::parse_head(buf, c.peer) {
                            return self.answer(token, c, parsed);
                        }
                    }
                    Phase::Linger { left } => {
                        *left = left.saturating_sub(n);
                        if *left == 0 {
                            return self.close(c);
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    if let Phase::Head(_) = c.phase {
                        let peer = c.peer;
                        tracing::debug!("{}", RequestError::Io { peer, source });
                    }
                    return self.close(c);
                }
            }
        }
        self.conns.insert(token, c);
    }

    /// A complete head (or a request that can never be one) is in.
    fn answer(&mut self, token: u64, c: Conn, parsed: Result<Request, RequestError>) {
        let req = match parsed {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!("{e}");
                return match e.status() {
                    Some(status) => {
                        let r = Response::text(status, format!("{e}\n"));
                        self.respond_here(token, c, &r, false);
                    }
                    None => self.close(c),
                };
            }
        };
        let head_only = req.method == http::Method::Head;
        if routes::is_probe(&req.path) {
            let r = routes::route(self.state, &req);
            return self.respond_here(token, c, &r, head_only);
        }
        if self.busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            let r = Response::text(503, format!("{}\n", http::BUSY));
            return self.respond_here(token, c, &r, head_only);
        }
        let _ = sys::epoll_unwatch(self.epfd(), c.stream.as_raw_fd());
        let (state, busy) = (self.state.clone(), self.busy.clone());
        let Conn {
            mut stream, peer, ..
        } = c;
        let spawned = std::thread::Builder::new()
            .name("sssonector-admin-req".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if stream.set_nonblocking(false).is_ok() {
                    let r = routes::route(&state, &req);
                    if let Err(e) = http::respond(&mut stream, &r, head_only) {
                        tracing::debug!(%peer, "admin client: write failed: {e}");
                    }
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("admin server: cannot spawn a request thread: {e}");
        }
    }

    /// Writes a short answer from the loop itself, half-closes and lingers. An answer the
    /// socket's send buffer does not take at once (a client that does not read) is dropped.
    fn respond_here(&mut self, token: u64, mut c: Conn, r: &Response, head_only: bool) {
        let bytes = http::response_bytes(r, head_only);
        let mut sent = 0;
        while sent < bytes.len() {
            match (&c.stream).write(&bytes[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if sent < bytes.len() {
            tracing::debug!(peer = %c.peer, "admin client: answer not taken, closing");
            return self.close(c);
        }
        let _ = c.stream.shutdown(Shutdown::Write);
        c.phase = Phase::Linger { left: LINGER_BYTES };
        c.deadline = Instant::now() + http::LINGER;
        self.conns.insert(token, c);
    }

    /// Answers a head that did not complete in time with a 408; ends lingering.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            let Some(c) = self.conns.remove(&token) else {
                continue;
            };
            match c.phase {
                Phase::Head(_) => {
                    let e = RequestError::Timeout { peer: c.peer };
                    tracing::debug!("{e}");
                    let r = Response::text(408, format!("{e}\n"));
                    self.respond_here(token, c, &r, false);
                }
                Phase::Linger { .. } => self.close(c),
            }
        }
    }
}
