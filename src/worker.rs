//! One worker thread: one io_uring, its listener sockets, buffer registry and connection
//! table; and [`start`], which binds the listeners and spawns the workers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use io_uring::cqueue;

use crate::buffer::{BufferRegistry, Registration};
use crate::config::{Config, SendMode};
use crate::conn::{ConnTable, State};
use crate::error::ProxyError;
use crate::metrics::{PublishedCounters, StatsSnapshot, WorkerCounters};
use crate::uring::{self, sys, OpKind, Ring, Token};

/// Submission queue entries per worker ring.
const RING_ENTRIES: u32 = 4096;
/// How often a worker publishes its counters and looks at its timers.
const TICK: Duration = Duration::from_millis(100);
/// Slab key used by ops that belong to the worker, not to a session.
const WORKER_KEY: usize = crate::uring::MAX_KEYS - 1;

/// What a worker knows about one listener.
pub(crate) struct WorkerListener {
    pub fd: OwnedFd,
    /// Indexes into the worker's endpoint list.
    pub endpoints: Vec<usize>,
    /// Round-robin cursor.
    pub next: usize,
    /// The multishot accept ended with an error (EMFILE...): re-arm on the next tick.
    pub accept_armed: bool,
    /// Clients of a loopback listener are local: zero-copy sends never pay off for them.
    pub loopback: bool,
}

/// Per-worker settings derived from the config.
#[derive(Clone)]
pub(crate) struct Settings {
    pub max_in_flight: usize,
    pub send_mode: SendMode,
}

/// Shared between the handle and the workers.
struct Control {
    stop: AtomicBool,
    wake_fds: Vec<OwnedFd>,
}

pub(crate) struct Worker {
    pub ring: Ring,
    pub table: ConnTable,
    pub listeners: Vec<WorkerListener>,
    pub endpoints: Vec<SocketAddr>,
    pub settings: Settings,
    /// Directions parked on ENOBUFS, served first come first served as slots return.
    pub waiters: VecDeque<(usize, u32, usize)>,
    pub counters: WorkerCounters,
    published: Arc<PublishedCounters>,
    control: Arc<Control>,
    wake_fd: RawFd,
    stopping: bool,
    cancelled_all: bool,
}

impl Worker {
    fn run(mut self) -> Result<(), ProxyError> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.ring.tick(Token::new(WORKER_KEY, 0, OpKind::Tick));
        self.ring
            .wait_wake(self.wake_fd, Token::new(WORKER_KEY, 0, OpKind::Wake));
        let mut cqes = Vec::with_capacity(1024);
        loop {
            self.ring
                .submit_and_wait()
                .map_err(|source| ProxyError::Internal {
                    what: "io_uring_enter failed".into(),
                    source,
                })?;
            self.ring.reap(&mut cqes);
            for &(user_data, res, flags) in &cqes {
                self.dispatch(user_data, res, flags);
            }
            if self.stopping && self.table.is_empty() {
                if !self.cancelled_all {
                    self.cancelled_all = true;
                    self.ring
                        .cancel_all(Token::new(WORKER_KEY, 0, OpKind::Cancel));
                }
                if self.ring.in_flight() == 0 {
                    break;
                }
            }
        }
        self.publish();
        Ok(())
    }

    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(token) = Token::decode(user_data) else {
            tracing::error!(user_data, "completion with an unknown user_data");
            return;
        };
        match token.op {
            OpKind::Accept => self.on_accept(token.key as usize, res, flags),
            OpKind::Tick => self.on_tick(),
            OpKind::Wake => self.on_wake(res),
            OpKind::Cancel if token.key as usize == WORKER_KEY => {}
            _ => self.on_session_op(token, res, flags),
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let fd = self.listeners[index].fd.as_raw_fd();
        self.listeners[index].accept_armed = true;
        self.ring.accept(fd, Token::new(index, 0, OpKind::Accept));
    }

    fn on_accept(&mut self, index: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.listeners[index].accept_armed = false;
        }
        if res < 0 {
            let err = std::io::Error::from_raw_os_error(-res);
            if res != -libc::ECANCELED {
                tracing::warn!(
                    listener = index,
                    "accept failed: {err}; retrying on the next tick"
                );
            }
            return;
        }
        if !self.listeners[index].accept_armed && !self.stopping && res >= 0 {
            self.arm_accept(index);
        }
        self.start_session(index, res);
    }

    fn on_tick(&mut self) {
        if !self.stopping {
            for i in 0..self.listeners.len() {
                if !self.listeners[i].accept_armed {
                    self.arm_accept(i);
                }
            }
        }
        self.publish();
    }

    fn on_wake(&mut self, res: i32) {
        if self.control.stop.load(Ordering::Acquire) {
            self.begin_stop();
        } else if res != -libc::ECANCELED {
            self.ring
                .wait_wake(self.wake_fd, Token::new(WORKER_KEY, 0, OpKind::Wake));
        }
    }

    /// Stops accepting and closes every session; the loop ends once all ops are done.
    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for l in &self.listeners {
            self.ring
                .cancel_fd(l.fd.as_raw_fd(), Token::new(WORKER_KEY, 0, OpKind::Cancel));
        }
        for (key, gen) in self.table.keys() {
            self.begin_close(key, gen, false);
        }
    }

    fn publish(&mut self) {
        let b = &self.ring.buffers;
        self.counters.buffer_slots_total = b.count() as u64;
        self.counters.buffer_slots_in_use = b.in_use() as u64;
        self.counters.buffer_slots_in_use_max = b.in_use_max() as u64;
        self.counters.buffer_allocations = b.allocations();
        self.counters.sessions_active = self.table.len() as u64;
        self.published.publish(&self.counters);
    }

    /// Pairs an accepted client with a new upstream connection.
    fn start_session(&mut self, listener: usize, client_fd: RawFd) {
        let l = &mut self.listeners[listener];
        let endpoint = l.endpoints[l.next % l.endpoints.len()];
        l.next = l.next.wrapping_add(1);
        let client_local = l.loopback;
        let _ = sys::set_nodelay(client_fd);
        let upstream = match sys::stream_socket(&self.endpoints[endpoint]) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(upstream = %self.endpoints[endpoint], "internal: cannot create upstream socket: {e}");
                self.counters.upstream_connect_errors += 1;
                sys::close(client_fd, false);
                return;
            }
        };
        let _ = sys::set_nodelay(upstream.as_raw_fd());
        let Some((key, gen)) = self.table.insert(client_fd, listener as u16) else {
            tracing::warn!("internal: connection table full; closing the new client");
            sys::close(client_fd, false);
            return;
        };
        let upstream_fd = upstream.into_raw_fd();
        let zc_upstream = !self.endpoints[endpoint].ip().is_loopback();
        let zc_client = !client_local
            && sys::peer_addr(client_fd)
                .map(|a| !a.ip().is_loopback())
                .unwrap_or(false);
        if let Some(s) = self.table.get_mut(key, gen) {
            s.upstream_fd = upstream_fd;
            s.endpoint = endpoint as u16;
            s.remote = [zc_upstream, zc_client];
            s.ops += 2;
        }
        self.counters.sessions_total += 1;
        self.ring.connect(
            upstream_fd,
            endpoint,
            Token::new(key, gen, OpKind::Connect),
            Token::new(key, gen, OpKind::ConnectTimeout),
        );
    }

    fn on_session_op(&mut self, token: Token, res: i32, flags: u32) {
        let key = token.key as usize;
        let Some(s) = self.table.get_mut(key, token.gen) else {
            // A completion for a freed slot: nothing of it can be in use any more.
            self.drop_received(cqueue::buffer_select(flags));
            return;
        };
        if !cqueue::more(flags) {
            s.ops -= 1;
        }
        match token.op {
            OpKind::Connect => self.on_connect(key, token.gen, res),
            OpKind::Recv => self.on_recv(key, token.gen, token.dir as usize, res, flags),
            OpKind::Send => {
                self.on_send(key, token.gen, token.dir as usize, token.slot, res, flags)
            }
            OpKind::SendMsg => {
                self.on_send_msg(key, token.gen, token.dir as usize, token.slot, res)
            }
            OpKind::ConnectTimeout | OpKind::Cancel => {}
            OpKind::Accept | OpKind::Tick | OpKind::Wake => {}
        }
        self.finish_if_drained(key, token.gen);
    }

    fn on_connect(&mut self, key: usize, gen: u32, res: i32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        if s.state != State::Connecting {
            return;
        }
        if res < 0 {
            let endpoint = self.endpoints[s.endpoint as usize];
            if res == -libc::ECANCELED {
                self.counters.upstream_connect_timeouts += 1;
                tracing::debug!(upstream = %endpoint, "upstream: connect timed out");
            } else {
                self.counters.upstream_connect_errors += 1;
                tracing::debug!(upstream = %endpoint, "upstream: connect failed: {}", std::io::Error::from_raw_os_error(-res));
            }
            self.begin_close(key, gen, false);
            return;
        }
        s.state = State::Active;
        self.arm_recv(key, gen, crate::conn::CLIENT_TO_UPSTREAM);
        self.arm_recv(key, gen, crate::conn::UPSTREAM_TO_CLIENT);
    }

    /// Which send op a direction uses for `len` bytes.
    pub(crate) fn send_op(&self, remote: bool, len: usize) -> uring::SendOp {
        let registered = self.ring.buffers.registration() == Registration::Registered;
        match self.settings.send_mode {
            SendMode::Send => uring::SendOp::Send,
            SendMode::Fixed if registered => uring::SendOp::WriteFixed,
            SendMode::Fixed => uring::SendOp::Send,
            SendMode::Zerocopy => uring::SendOp::ZeroCopy,
            // Loopback copies zero-copy pages anyway, and small sends lose to the
            // notification round trip; zero-copy from registered slots pays off for
            // large writes to a real network.
            SendMode::Auto if remote && registered && len >= ZEROCOPY_MIN => {
                uring::SendOp::ZeroCopy
            }
            SendMode::Auto => uring::SendOp::Send,
        }
    }
}

/// The smallest send `send_mode: auto` makes zero-copy.
const ZEROCOPY_MIN: usize = 16 * 1024;

/// A running proxy: its bound addresses, its counters, and the way to stop it.
pub struct ProxyHandle {
    threads: Vec<JoinHandle<Result<(), ProxyError>>>,
    control: Arc<Control>,
    published: Vec<Arc<PublishedCounters>>,
    listen_addrs: Vec<(String, SocketAddr)>,
}

impl ProxyHandle {
    /// The bound address of each listener, in config order (useful when the config says port 0).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listen_addrs.clone()
    }

    /// The counters as last published by the workers (every 100 ms).
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::collect(&self.published)
    }

    /// Asks every worker to stop and waits for them.
    pub fn shutdown(self) -> Result<(), ProxyError> {
        self.shutdown_trigger().trigger();
        self.wait()
    }

    /// Waits until the workers stop (after a trigger, or on a fatal error).
    pub fn wait(self) -> Result<(), ProxyError> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t.join().unwrap_or_else(|_| {
                Err(ProxyError::Internal {
                    what: "a worker thread panicked".into(),
                    source: std::io::Error::other("panic"),
                })
            });
            if let Err(e) = r {
                // One worker failing stops the others: a partial proxy is worse than none.
                ShutdownTrigger {
                    control: self.control.clone(),
                }
                .trigger();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// A handle that can stop the proxy from another thread (a signal handler thread).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            control: self.control.clone(),
        }
    }
}

/// Stops the proxy from another thread.
#[derive(Clone)]
pub struct ShutdownTrigger {
    control: Arc<Control>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.control.stop.store(true, Ordering::Release);
        for fd in &self.control.wake_fds {
            sys::eventfd_signal(fd.as_raw_fd());
        }
    }
}

/// Binds every listener, starts the workers, and returns once they are accepting.
pub fn start(config: Config) -> Result<ProxyHandle, ProxyError> {
    let workers = config.workers.resolve();
    let conn = &config.connection;
    let slots = conn.buffer.max_pool_size.div_ceil(workers).max(1);
    let internal = |what: String| move |source| ProxyError::Internal { what, source };
    match sys::raise_nofile_limit() {
        Ok(n) if n < 4096 => tracing::warn!(
            limit = n,
            "the open-file limit allows only {} sessions",
            n / 2
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }

    // Every endpoint of every listener, each listener pointing into this list.
    let mut endpoints = Vec::new();
    let mut listener_endpoints = Vec::new();
    for l in &config.listeners {
        let mut idx = Vec::new();
        for addr in &l.resolved {
            idx.push(endpoints.len());
            endpoints.push(*addr);
        }
        listener_endpoints.push(idx);
    }

    // Bind worker 0's sockets first so port 0 resolves once, then the rest on that port.
    let mut listen_addrs = Vec::new();
    let mut sockets: Vec<Vec<OwnedFd>> = (0..workers).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let bind_err = |source| ProxyError::Bind {
            name: l.name.clone(),
            addr: l.listen,
            source,
        };
        let first = sys::reuseport_listener(&l.listen, 4096).map_err(bind_err)?;
        let actual = sys::local_addr(first.as_raw_fd()).map_err(bind_err)?;
        sockets[0].push(first);
        for per_worker in sockets.iter_mut().skip(1) {
            per_worker.push(sys::reuseport_listener(&actual, 4096).map_err(bind_err)?);
        }
        tracing::info!(listener = %l.name, addr = %actual, upstreams = ?l.upstreams, "listening");
        listen_addrs.push((l.name.clone(), actual));
    }

    let mut wake_fds = Vec::new();
    for _ in 0..workers {
        wake_fds.push(sys::eventfd().map_err(internal("cannot create an eventfd".into()))?);
    }
    let wake_raw: Vec<RawFd> = wake_fds.iter().map(|f| f.as_raw_fd()).collect();
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        wake_fds,
    });
    let settings = Settings {
        max_in_flight: conn.buffer.max_in_flight.clamp(1, uring::MAX_IOV),
        send_mode: conn.buffer.send_mode,
    };

    let mut threads = Vec::new();
    let mut published = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Registration, ProxyError>>();
    for (index, socks) in sockets.into_iter().enumerate() {
        let counters = Arc::new(PublishedCounters::default());
        published.push(counters.clone());
        let listeners: Vec<WorkerListener> = socks
            .into_iter()
            .zip(&listener_endpoints)
            .zip(&listen_addrs)
            .map(|((fd, eps), (_, addr))| WorkerListener {
                fd,
                endpoints: eps.clone(),
                next: index,
                accept_armed: false,
                loopback: addr.ip().is_loopback(),
            })
            .collect();
        let endpoints = endpoints.clone();
        let settings = settings.clone();
        let control = control.clone();
        let wake_fd = wake_raw[index];
        let ready = ready_tx.clone();
        let slot_size = conn.buffer.size;
        let connect_timeout = conn.pool.connect_timeout;
        let thread = std::thread::Builder::new()
            .name(format!("sssonector-w{index}"))
            .spawn(move || {
                let setup = (|| {
                    let (ring, flavor) = uring::build_ring(RING_ENTRIES)?;
                    uring::probe(&ring)?;
                    let buffers = BufferRegistry::new(slots, slot_size)
                        .map_err(internal(format!("cannot map {slots} buffers of {slot_size} bytes")))?;
                    let mut ring = Ring::new(ring, buffers, &endpoints, connect_timeout, TICK);
                    let registration = ring.register_buffers().map_err(|e| {
                        ProxyError::UringUnavailable(format!(
                            "cannot register a provided-buffer ring ({e}); Linux >= 5.19 is required"
                        ))
                    })?;
                    tracing::debug!(worker = index, ?flavor, ?registration, slots, "worker ready");
                    Ok::<_, ProxyError>((ring, registration))
                })();
                let (ring, registration) = match setup {
                    Ok(v) => v,
                    Err(e) => {
                        // start() reports it; the thread itself ends quietly.
                        let _ = ready.send(Err(e));
                        return Ok(());
                    }
                };
                counters
                    .registered
                    .store(registration == Registration::Registered, Ordering::Relaxed);
                let _ = ready.send(Ok(registration));
                drop(ready);
                let worker = Worker {
                    ring,
                    table: ConnTable::default(),
                    listeners,
                    endpoints,
                    settings,
                    waiters: VecDeque::new(),
                    counters: WorkerCounters::default(),
                    published: counters,
                    control,
                    wake_fd,
                    stopping: false,
                    cancelled_all: false,
                };
                worker.run()
            })
            .map_err(internal("cannot spawn a worker thread".into()))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let handle = ProxyHandle {
        threads,
        control,
        published,
        listen_addrs,
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let _ = handle.shutdown();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(handle)
}
