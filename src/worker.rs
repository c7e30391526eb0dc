//! One worker thread: one io_uring, its listener sockets, buffer registry, connection
//! table and warm pool; and [`start`], which binds the listeners and spawns the workers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::cqueue;

use crate::admin::AdminServer;
use crate::admission::{Admission, Admit, Ticket};
use crate::buffer::{BufferRegistry, Registration};
use crate::config::{Balance, Config, HealthCheckConfig, MonitoringConfig, SendMode};
use crate::conn::{ConnTable, State, CLIENT_TO_UPSTREAM, UPSTREAM_TO_CLIENT};
use crate::error::ProxyError;
use crate::logging::LogLimits;
use crate::metrics::{
    EndpointCounters, PublishedCounters, StatsSnapshot, WorkerCounters, WorkerHistograms,
};
use crate::reload::{LiveConfig, Reloader};
use crate::upstream::{self, keeper, Discard, EndpointTable, WarmPool};
use crate::uring::{self, sys, OpKind, Ring, Token};
use crate::view::ProxyView;

/// Submission queue entries per worker ring.
const RING_ENTRIES: u32 = 4096;
/// How often a worker publishes its counters, refills its pool and checks endpoint health.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopping worker waits for zero-copy notifications of closed sessions.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Slab key used by ops that belong to the worker, not to a session.
const WORKER_KEY: usize = crate::uring::MAX_KEYS - 1;

/// State shared by the handle, the workers and the health prober.
pub(crate) struct Shared {
    stop: AtomicBool,
    /// A drain is under way (`/readyz` fails); set before `close_listeners`.
    draining: AtomicBool,
    /// Drain, second step: workers close their listeners and finish their sessions.
    close_listeners: AtomicBool,
    wake_fds: Vec<OwnedFd>,
    pub admission: Admission,
    pub endpoints: EndpointTable,
    /// The warm pool, shared by every worker; its keeper thread watches it.
    pub pool: WarmPool,
    /// The settings workers apply, replaced by a reload; `live_generation` tells a worker
    /// that it has not applied the latest yet.
    pub live: Mutex<Arc<LiveConfig>>,
    pub live_generation: AtomicU64,
    /// Read by the prober on each round, replaced by a reload.
    pub health_config: Mutex<HealthCheckConfig>,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn listeners_closing(&self) -> bool {
        self.close_listeners.load(Ordering::Acquire)
    }

    /// Wakes worker `index` (it looks at its grants, the stop flag and endpoint health).
    pub fn wake(&self, index: usize) {
        if let Some(fd) = self.wake_fds.get(index) {
            sys::eventfd_signal(fd.as_raw_fd());
        }
    }

    /// Hands workers new settings (a reload) and wakes them to apply them.
    pub fn publish_live(&self, live: LiveConfig) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        self.live_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    pub fn wake_all(&self) {
        for i in 0..self.wake_fds.len() {
            self.wake(i);
        }
        self.pool.wake_keeper();
    }
}

impl keeper::KeeperHost for Shared {
    fn pool(&self) -> &WarmPool {
        &self.pool
    }

    fn endpoints(&self) -> &EndpointTable {
        &self.endpoints
    }

    fn stopping(&self) -> bool {
        Shared::stopping(self)
    }

    fn wake_worker(&self, n: usize) {
        if !self.wake_fds.is_empty() {
            self.wake(n % self.wake_fds.len());
        }
    }
}

/// What a worker knows about one listener.
pub(crate) struct WorkerListener {
    pub fd: OwnedFd,
    /// Endpoint ids of this listener.
    pub endpoints: Vec<usize>,
    /// Round-robin cursor.
    pub next: usize,
    /// The multishot accept is armed (it ends on errors such as EMFILE: re-armed next tick).
    pub accept_armed: bool,
    /// Clients of a loopback listener are local: zero-copy sends never pay off for them.
    pub loopback: bool,
}

/// Per-worker settings derived from the config.
#[derive(Clone)]
pub(crate) struct Settings {
    pub max_in_flight: usize,
    pub send_mode: SendMode,
    pub pool_enabled: bool,
    /// Sessions without traffic for this long are closed; `None`: never.
    pub session_idle_timeout: Option<Duration>,
    pub queue_timeout: Duration,
    pub max_retries: u32,
    pub retry_interval: Duration,
    pub balance: Balance,
    pub health_enabled: bool,
    /// How often the sweep walks the idle pool, the active list and the queue.
    pub sweep_every: Duration,
}

pub(crate) struct Worker {
    pub(crate) index: usize,
    pub ring: Ring,
    pub table: ConnTable,
    pub listeners: Vec<WorkerListener>,
    pub settings: Settings,
    /// Directions parked on ENOBUFS, served first come first served as slots return.
    pub waiters: VecDeque<(usize, u32, usize)>,
    pub counters: WorkerCounters,
    histograms: WorkerHistograms,
    /// Per endpoint id (as many as this worker knows).
    pub(crate) endpoint_counters: Vec<EndpointCounters>,
    pub(crate) log_limits: LogLimits,
    /// Client addresses by slab key, kept only while debug logging is on (a closed or
    /// reset socket no longer has a peer address to ask for).
    pub(crate) debug_peers: HashMap<usize, SocketAddr>,
    /// This worker's pool dials in flight (table entries that are no session).
    pool_dialing: usize,
    /// The [`Shared::live_generation`] this worker applied last.
    pub(crate) live_generation: u64,
    /// Queued clients of this worker, oldest first (for the queue timeout).
    queued: VecDeque<(usize, u32)>,
    published: Arc<PublishedCounters>,
    pub(crate) shared: Arc<Shared>,
    wake_fd: RawFd,
    pub(crate) stopping: bool,
    /// Draining: listeners are closed, the sessions left finish on their own.
    pub(crate) listeners_closed: bool,
    cancelled_all: bool,
    started: Instant,
    pub(crate) now: Instant,
    /// Milliseconds since `started`, read once per completion batch.
    pub now_ms: u64,
    pub(crate) next_sweep: Instant,
    /// Scratch: workers to wake after an admission call.
    pub(crate) woken: Vec<usize>,
}

impl Worker {
    fn run(mut self) -> Result<(), ProxyError> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.ring
            .tick(Token::new(WORKER_KEY, 0, OpKind::Tick), false);
        self.ring
            .wait_wake(self.wake_fd, Token::new(WORKER_KEY, 0, OpKind::Wake));
        self.refill();
        let mut cqes = Vec::with_capacity(1024);
        let mut stop_deadline = self.now;
        loop {
            self.ring
                .submit_and_wait()
                .map_err(|source| ProxyError::Internal {
                    what: "io_uring_enter failed".into(),
                    source,
                })?;
            self.now = Instant::now();
            self.now_ms = self.now.duration_since(self.started).as_millis() as u64;
            self.ring.reap(&mut cqes);
            for &(user_data, res, flags) in &cqes {
                self.dispatch(user_data, res, flags);
            }
            if self.stopping && self.table.is_empty() {
                if !self.cancelled_all {
                    self.cancelled_all = true;
                    stop_deadline = self.now + STOP_GRACE;
                    self.ring
                        .cancel_all(Token::new(WORKER_KEY, 0, OpKind::Cancel));
                    // Wakes the loop while zero-copy notifications may still be due.
                    self.ring
                        .tick(Token::new(WORKER_KEY, 0, OpKind::Tick), true);
                }
                if self.ring.in_flight() == 0 {
                    break;
                }
                if self.now >= stop_deadline {
                    // Only zero-copy notifications can be left (every session is gone):
                    // their pages stay pinned by the kernel, so leaving is safe.
                    tracing::warn!(
                        ops = self.ring.in_flight(),
                        "worker stopping with zero-copy notifications still due"
                    );
                    break;
                }
                if self.ring.in_flight() == 1 {
                    // Only the wake-up tick is left (it is re-armed while waiting).
                    break;
                }
            }
        }
        self.publish();
        self.published.finish();
        Ok(())
    }

    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(token) = Token::decode(user_data) else {
            tracing::error!(user_data, "internal: completion with an unknown user_data");
            return;
        };
        match token.op {
            OpKind::Accept => self.on_accept(token.key as usize, res, flags),
            OpKind::Tick => {
                // While stopping, the tick only wakes the loop to check its grace period.
                if !cqueue::more(flags)
                    && res != -libc::ECANCELED
                    && (!self.stopping || self.cancelled_all)
                {
                    // Multishot timeouts end on CQ overflow, and kernels before 6.4
                    // refuse them (EINVAL): fall back to re-arming a one-shot tick.
                    self.ring.tick(
                        Token::new(WORKER_KEY, 0, OpKind::Tick),
                        res == -libc::EINVAL,
                    );
                }
                if res != -libc::EINVAL {
                    self.on_tick();
                }
            }
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
            if res != -libc::ECANCELED && !self.listeners_closed {
                if let Some(held_back) = self.log_limits.accept.hit() {
                    let err = std::io::Error::from_raw_os_error(-res);
                    tracing::warn!(
                        listener = index,
                        held_back,
                        "client: accept failed: {err}; retrying on the next tick"
                    );
                }
            }
            return;
        }
        if self.stopping {
            sys::close(res, false);
            return;
        }
        if !self.listeners[index].accept_armed && !self.listeners_closed {
            self.arm_accept(index);
        }
        self.accept_client(index, res);
    }

    fn on_tick(&mut self) {
        if self.listeners_closed && self.client_sessions() == 0 {
            self.begin_stop();
        }
        if !self.stopping {
            for i in 0..self.listeners.len() {
                if !self.listeners[i].accept_armed && !self.listeners_closed {
                    self.arm_accept(i);
                }
            }
            if self.now >= self.next_sweep {
                self.next_sweep = self.now + self.settings.sweep_every;
                self.sweep();
            }
            self.refill();
            // A parked direction re-armed without data leaves its slot in the ring: give
            // the rest of the wait list another go.
            self.serve_waiters();
        }
        self.publish();
    }

    fn on_wake(&mut self, res: i32) {
        if self.shared.stopping() {
            self.begin_stop();
            return;
        }
        if self.shared.listeners_closing() {
            self.close_listeners();
        }
        if self.shared.live_generation.load(Ordering::Acquire) != self.live_generation {
            self.apply_live_config();
        }
        let mut grants = Vec::new();
        self.shared.admission.take_grants(self.index, &mut grants);
        for t in grants {
            self.on_grant(t);
        }
        self.refill();
        if res != -libc::ECANCELED {
            self.ring
                .wait_wake(self.wake_fd, Token::new(WORKER_KEY, 0, OpKind::Wake));
        }
    }

    /// Stops accepting and closes every session and idle connection; the loop ends once
    /// all ops are done.
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

    /// Drain: stops accepting for good (a connect to the port is refused from now on);
    /// sessions in flight go on, and the worker stops when the last one ends (`on_tick`).
    /// The shared warm pool was closed by the trigger, so nothing refills it.
    fn close_listeners(&mut self) {
        if self.listeners_closed {
            return;
        }
        self.listeners_closed = true;
        for l in &self.listeners {
            // shutdown() takes a listening socket out of LISTEN at once (its pending
            // accept completes with an error); close() would wait for the accept op.
            sys::shutdown_listener(l.fd.as_raw_fd());
        }
    }

    pub(crate) fn shared_endpoint_addr(&self, ep: usize) -> SocketAddr {
        self.shared.endpoints.get(ep).addr
    }

    /// Entries that have a client (pool dials have none).
    fn client_sessions(&self) -> usize {
        self.table.len().saturating_sub(self.pool_dialing)
    }

    fn publish(&mut self) {
        let b = &self.ring.buffers;
        self.counters.buffer_slots_total = b.count() as u64;
        self.counters.buffer_slots_in_use = b.in_use() as u64;
        self.counters.buffer_slots_in_use_max = b.in_use_max() as u64;
        self.counters.buffer_allocations = b.allocations();
        // Every pool dial is a table entry until it joins the pool.
        self.counters.sessions_active = self.client_sessions() as u64;
        for (ep, c) in self.endpoint_counters.iter().enumerate() {
            self.published.publish_endpoint(ep, c);
        }
        self.published.publish_histograms(&self.histograms);
        self.published.publish(&self.counters);
    }

    pub(crate) fn wake_granted(&mut self) {
        for w in std::mem::take(&mut self.woken) {
            if w == self.index {
                let mut grants = Vec::new();
                self.shared.admission.take_grants(self.index, &mut grants);
                for t in grants {
                    self.on_grant(t);
                }
            } else {
                self.shared.wake(w);
            }
        }
    }

    /// A new client: it gets a `max_active` slot now, or waits in the queue.
    fn accept_client(&mut self, listener: usize, client_fd: RawFd) {
        let _ = sys::set_nodelay(client_fd);
        let Some((key, gen)) =
            self.table
                .insert(client_fd, listener as u16, State::Queued, self.now_ms)
        else {
            tracing::warn!("internal: connection table full; closing the new client");
            sys::close(client_fd, false);
            return;
        };
        self.counters.sessions_total += 1;
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Ok(peer) = sys::peer_addr(client_fd) {
                self.debug_peers.insert(key, peer);
            }
        }
        let ticket = Ticket {
            worker: self.index,
            key,
            gen,
            since: self.now,
        };
        match self.shared.admission.admit(ticket, &mut self.woken) {
            Admit::Now => {
                if let Some(s) = self.table.get_mut(key, gen) {
                    s.permit = true;
                }
                self.connect_client(key, gen);
            }
            Admit::Queued => {
                self.counters.queued_total += 1;
                self.queued.push_back((key, gen));
            }
            Admit::Rejected => {
                self.counters.queue_rejected += 1;
                let peer = self.debug_peers.remove(&key);
                tracing::debug!(client = ?peer, "client: admission queue full; closing the new client");
                self.table.remove(key);
                sys::close(client_fd, false);
            }
        }
        self.wake_granted();
    }

    /// A queued client got a slot.
    fn on_grant(&mut self, t: Ticket) {
        match self.table.get_mut(t.key, t.gen) {
            Some(s) if s.state == State::Queued => {
                s.permit = true;
                let waited = self.now.saturating_duration_since(t.since).as_millis() as u64;
                self.counters.queue_wait_ms += waited;
                self.histograms.queue_wait_ms.record(waited);
                self.connect_client(t.key, t.gen);
            }
            // The client went away (or timed out) after the grant was made.
            _ => {
                self.shared.admission.release(&mut self.woken);
                self.wake_granted();
            }
        }
    }

    /// Pairs an admitted client with an upstream: a warm connection of the picked
    /// endpoint if one is alive, else a dial.
    fn connect_client(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        let (listener, tried) = (s.listener as usize, s.tried);
        let l = &mut self.listeners[listener];
        let Some(ep) = upstream::pick(
            &self.shared.endpoints,
            &l.endpoints,
            self.settings.balance,
            &mut l.next,
            tried,
            false,
        ) else {
            return self.retry_later(key, gen);
        };
        if let Some(s) = self.table.get_mut(key, gen) {
            s.endpoint = ep as u16;
        }
        if self.settings.pool_enabled {
            let pool = &self.shared.pool;
            // The session's demand counts once, however many dead ones are skipped.
            let mut first = true;
            while let Some(conn) = pool.take(ep, self.now, std::mem::take(&mut first)) {
                // The keeper's watch may not have reported a close yet: a FIN or RST
                // behind a queued greeting must not reach the client.
                if !sys::tcp_established(conn.fd.as_raw_fd()) {
                    pool.count_discard(Discard::DeadAtHandoff, 1);
                    upstream::close_unused(conn.fd);
                    continue;
                }
                self.counters.pool_hits += 1;
                if let Some(s) = self.table.get_mut(key, gen) {
                    s.upstream_fd = conn.fd.into_raw_fd();
                }
                self.activate(key, gen);
                // Replace it now, not on the next tick: a steady stream of clients
                // would drain the pool between ticks.
                return self.refill_endpoint(ep);
            }
            self.counters.pool_misses += 1;
        }
        self.dial(key, gen, ep);
        self.refill_endpoint(ep);
    }

    /// Starts a dial of endpoint `ep` for entry `key` (a client's or the pool's).
    fn dial(&mut self, key: usize, gen: u32, ep: usize) {
        let addr = self.shared.endpoints.get(ep).addr;
        let sock = match sys::stream_socket(&addr) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(upstream = %addr, "internal: cannot create an upstream socket: {e}");
                self.counters.upstream_connect_errors += 1;
                return self.begin_close(key, gen, false);
            }
        };
        let fd = sock.as_raw_fd();
        let _ = sys::set_nodelay(fd);
        if let Err(e) = sys::set_upstream_keepalive(fd) {
            tracing::debug!(upstream = %addr, "upstream: cannot set keepalive: {e}");
        }
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.upstream_fd = sock.into_raw_fd();
        s.endpoint = ep as u16;
        s.last_active = self.now_ms;
        if s.state != State::PoolDial {
            s.state = State::Connecting;
        }
        s.ops += 2;
        self.ring.connect(
            fd,
            ep,
            Token::new(key, gen, OpKind::Connect),
            Token::new(key, gen, OpKind::ConnectTimeout),
        );
    }

    /// The session relays from now on.
    fn activate(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.state = State::Active;
        s.counted = true;
        s.started_ms = self.now_ms as u32;
        let ep = s.endpoint as usize;
        if let Some(c) = self.endpoint_counters.get_mut(ep) {
            c.sessions += 1;
        }
        let client_fd = s.client_fd;
        let listener = s.listener as usize;
        self.shared
            .endpoints
            .get(ep)
            .active
            .fetch_add(1, Ordering::Relaxed);
        let upstream_remote = !self.shared.endpoints.get(ep).addr.ip().is_loopback();
        let client_remote = !self.listeners[listener].loopback
            && sys::peer_addr(client_fd)
                .map(|a| !a.ip().is_loopback())
                .unwrap_or(false);
        if let Some(s) = self.table.get_mut(key, gen) {
            s.remote[CLIENT_TO_UPSTREAM] = upstream_remote;
            s.remote[UPSTREAM_TO_CLIENT] = client_remote;
        }
        self.table.touch(key, self.now_ms);
        self.arm_recv(key, gen, CLIENT_TO_UPSTREAM);
        self.arm_recv(key, gen, UPSTREAM_TO_CLIENT);
    }

    fn on_session_op(&mut self, token: Token, res: i32, flags: u32) {
        let key = token.key as usize;
        let Some(s) = self.table.get_mut(key, token.gen) else {
            // A completion for a freed entry: nothing of it can be in use any more. A
            // zero-copy notification still holds its slot.
            if token.op == OpKind::Send && cqueue::notif(flags) {
                self.release_slot(token.slot);
            }
            self.drop_received(cqueue::buffer_select(flags));
            return;
        };
        // A zero-copy send's notification is not counted as one of the session's ops: it
        // only comes once the peer acknowledged the data (or the socket is gone), so a
        // closing session must not wait for it; the slot it holds keeps a reference.
        let done = if token.op == OpKind::Send {
            !cqueue::notif(flags)
        } else {
            !cqueue::more(flags)
        };
        if done {
            s.ops -= 1;
        }
        match token.op {
            OpKind::Connect => self.on_connect(key, token.gen, res),
            OpKind::RetryTimer => {
                if self.table.get_mut(key, token.gen).map(|s| s.state) == Some(State::RetryWait) {
                    self.connect_client(key, token.gen);
                }
            }
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
        self.settle(key, token.gen);
    }

    fn on_connect(&mut self, key: usize, gen: u32, res: i32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        let state = s.state;
        if state != State::Connecting && state != State::PoolDial {
            return;
        }
        let ep = s.endpoint as usize;
        let health = self.settings.health_enabled;
        if res >= 0 {
            self.histograms
                .connect_ms
                .record(self.now_ms.saturating_sub(s.last_active));
            if health {
                self.shared.endpoints.observe(ep, true);
            }
            if state == State::PoolDial {
                s.state = State::PoolReady;
            } else {
                self.activate(key, gen);
            }
            return;
        }
        let addr = self.shared.endpoints.get(ep).addr;
        if res == -libc::ECANCELED {
            self.counters.upstream_connect_timeouts += 1;
            tracing::debug!(upstream = %addr, "upstream: connect timed out");
        } else {
            tracing::debug!(upstream = %addr, "upstream: connect failed: {}", std::io::Error::from_raw_os_error(-res));
        }
        self.counters.upstream_connect_errors += 1;
        self.shared
            .endpoints
            .get(ep)
            .connect_errors
            .fetch_add(1, Ordering::Relaxed);
        if health && self.shared.endpoints.observe(ep, false) == upstream::Transition::WentDown {
            tracing::warn!(upstream = %addr, "upstream: dials keep failing, endpoint marked down");
            self.shared.wake_all();
        }
        let fd = std::mem::replace(&mut s.upstream_fd, -1);
        sys::close(fd, false);
        if state == State::PoolDial {
            // The reservation is over; finalize must not end it a second time.
            s.endpoint = NO_ENDPOINT;
            self.pool_dialing -= 1;
            self.shared
                .pool
                .dial_failed(ep, self.now + self.settings.retry_interval);
            return self.begin_close(key, gen, false);
        }
        // A client's dial: another healthy endpoint at once, the same one after
        // retry_interval, at most max_retries more attempts in all.
        s.tried |= 1u64 << (ep % 64);
        if u32::from(s.retries) >= self.settings.max_retries.min(u32::from(u16::MAX)) {
            self.counters.connection_failures += 1;
            tracing::debug!(upstream = %addr, retries = s.retries, "upstream: giving up on the client after its retries");
            return self.begin_close(key, gen, false);
        }
        s.retries = s.retries.saturating_add(1);
        self.counters.connect_retries += 1;
        let (listener, tried) = (s.listener as usize, s.tried);
        let l = &mut self.listeners[listener];
        match upstream::pick(
            &self.shared.endpoints,
            &l.endpoints,
            self.settings.balance,
            &mut l.next,
            tried,
            true,
        ) {
            Some(next) => self.dial(key, gen, next),
            None => self.retry_later(key, gen),
        }
    }

    /// Every healthy endpoint failed this round: try again after `retry_interval`.
    fn retry_later(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.state = State::RetryWait;
        s.tried = 0;
        s.ops += 1;
        self.ring
            .retry_timer(Token::new(key, gen, OpKind::RetryTimer));
    }

    /// Starts tearing an entry down: cancels its ops; it is freed when the last completes.
    pub(crate) fn begin_close(&mut self, key: usize, gen: u32, reset: bool) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.reset |= reset;
        if s.state == State::Draining {
            return;
        }
        let prev = std::mem::replace(&mut s.state, State::Draining);
        let fds = [s.client_fd, s.upstream_fd];
        let pending = s.ops > 0;
        if prev == State::Queued {
            // Not found: the grant is on its way and will be given back (on_grant).
            self.shared.admission.withdraw(self.index, key, gen);
        }
        if prev == State::RetryWait {
            if let Some(s) = self.table.get_mut(key, gen) {
                s.ops += 1;
            }
            self.ring.cancel_op(
                Token::new(key, gen, OpKind::RetryTimer),
                Token::new(key, gen, OpKind::Cancel),
            );
        }
        if pending {
            for fd in fds.into_iter().filter(|fd| *fd >= 0) {
                if let Some(s) = self.table.get_mut(key, gen) {
                    s.ops += 1;
                }
                self.ring
                    .cancel_fd(fd, Token::new(key, gen, OpKind::Cancel));
            }
        }
        self.table.unlink(key);
        self.settle(key, gen);
    }

    /// After an op of entry `key` completed or it started closing: free a drained entry,
    /// or move a connected pool dial into the pool, once no op of it is in flight.
    pub(crate) fn settle(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        if s.ops > 0 {
            return;
        }
        match s.state {
            State::Draining => self.finalize(key),
            State::PoolReady => {
                let s = self.table.remove(key);
                let ep = s.endpoint as usize;
                self.pool_dialing -= 1;
                // The entry owned the fd and none of its ops is in flight (ops == 0):
                // from here the pool owns it.
                let fd = sys::own_fd(s.upstream_fd);
                // Read before the health flag: a flush after this refuses the put.
                let epoch = self.shared.endpoints.down_epoch(ep);
                if self.stopping || !self.shared.endpoints.is_up(ep) {
                    self.shared.pool.dial_ended(ep);
                    upstream::close_unused(fd);
                } else if let Err(fd) = self.shared.pool.put(ep, fd, self.now, epoch) {
                    upstream::close_unused(fd);
                }
            }
            _ => {}
        }
    }

    /// Frees a drained entry: its slots, its `max_active` slot, its fds, its key.
    fn finalize(&mut self, key: usize) {
        let mut s = self.table.remove(key);
        let mut recycled = 0;
        for d in &mut s.dirs {
            recycled += self.ring.buffers.clear(&mut d.queue);
        }
        if recycled > 0 {
            self.serve_waiters();
        }
        let ep = s.endpoint as usize;
        if s.client_fd >= 0 {
            self.counters.sessions_closed += 1;
            if let Some(client) = self.debug_peers.remove(&key) {
                self.log_close(client, &s);
            }
        }
        if s.counted {
            let lived = (self.now_ms as u32).wrapping_sub(s.started_ms);
            self.histograms.session_ms.record(u64::from(lived));
            self.shared
                .endpoints
                .get(ep)
                .active
                .fetch_sub(1, Ordering::Relaxed);
        }
        if s.client_fd < 0 && s.endpoint != NO_ENDPOINT {
            self.pool_dialing -= 1;
            self.shared.pool.dial_ended(ep);
        }
        if s.permit {
            self.shared.admission.release(&mut self.woken);
        }
        sys::close(s.client_fd, s.reset);
        sys::close(s.upstream_fd, s.reset);
        self.wake_granted();
    }

    /// The one debug line per session close.
    fn log_close(&self, client: SocketAddr, s: &crate::conn::Session) {
        // A session that never relayed (queue timeout, failed dials) has no upstream.
        let (upstream, lived_ms) = if s.counted {
            let addr = self.shared.endpoints.get(s.endpoint as usize).addr;
            let lived = (self.now_ms as u32).wrapping_sub(s.started_ms);
            (addr.to_string(), lived)
        } else {
            ("none".to_string(), 0)
        };
        tracing::debug!(%client, %upstream, lived_ms, reset = s.reset, "session closed");
    }

    /// Closes inactive sessions and clients that waited past the queue timeout (the
    /// pool keeper looks after idle pooled connections).
    fn sweep(&mut self) {
        if let Some(timeout) = self.settings.session_idle_timeout {
            let idle_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            while let Some((key, gen, last)) = self.table.oldest_active() {
                if last.saturating_add(idle_ms) > self.now_ms {
                    break;
                }
                self.counters.session_timeouts += 1;
                tracing::debug!("client: session closed after {timeout:?} without traffic");
                self.begin_close(key, gen, false);
            }
        }

        let queue_ms = self.settings.queue_timeout.as_millis() as u64;
        while let Some(&(key, gen)) = self.queued.front() {
            let Some(s) = self.table.get_mut(key, gen) else {
                self.queued.pop_front();
                continue;
            };
            if s.state != State::Queued {
                self.queued.pop_front();
                continue;
            }
            if s.last_active + queue_ms > self.now_ms {
                break;
            }
            self.queued.pop_front();
            self.counters.queue_timeouts += 1;
            tracing::debug!(
                "client: closed after waiting {:?} for admission",
                self.settings.queue_timeout
            );
            self.begin_close(key, gen, false);
        }
    }

    /// Dials healthy endpoints up to their pool targets.
    pub(crate) fn refill(&mut self) {
        // The endpoints this worker knows: a reload may have grown the table meanwhile.
        for ep in 0..self.ring.endpoints() {
            self.refill_endpoint(ep);
        }
    }

    /// Dials `ep` up to its pool target (the reservation is shared by every worker, so
    /// workers never dial the same deficit twice).
    fn refill_endpoint(&mut self, ep: usize) {
        if !self.settings.pool_enabled
            || self.stopping
            || self.listeners_closed
            || !self.shared.endpoints.is_up(ep)
        {
            return;
        }
        let n = self
            .shared
            .pool
            .reserve_dials(ep, self.now, upstream::MAX_POOL_DIALS);
        for _ in 0..n {
            let Some((key, gen)) = self.table.insert(-1, 0, State::PoolDial, self.now_ms) else {
                self.shared.pool.dial_ended(ep);
                continue;
            };
            if let Some(s) = self.table.get_mut(key, gen) {
                s.endpoint = ep as u16;
            }
            self.pool_dialing += 1;
            self.counters.pool_dials += 1;
            self.dial(key, gen, ep);
        }
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

/// `Session::endpoint` of a pool dial whose reservation was already given back.
const NO_ENDPOINT: u16 = u16::MAX;

/// The smallest send `send_mode: auto` makes zero-copy.
const ZEROCOPY_MIN: usize = 16 * 1024;

/// A running proxy: its bound addresses, its counters, and the way to stop it.
pub struct ProxyHandle {
    threads: Vec<JoinHandle<Result<(), ProxyError>>>,
    prober: Option<JoinHandle<()>>,
    keeper: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    view: ProxyView,
    admin: Option<AdminServer>,
    monitoring: MonitoringConfig,
    reloader: Arc<Reloader>,
}

impl ProxyHandle {
    /// The bound address of each listener, in config order (useful when the config says port 0).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.view.listeners.clone()
    }

    /// The counters as last published by the workers (every 100 ms), with the admission
    /// and endpoint state as of now.
    pub fn stats(&self) -> StatsSnapshot {
        self.view.stats()
    }

    /// Applies a new configuration to the running proxy (SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// A read-only view for the control plane.
    pub fn view(&self) -> ProxyView {
        self.view.clone()
    }

    /// Starts the admin HTTP server on `connection.monitoring.listen`; it stops with the
    /// proxy. Returns its bound address.
    pub fn start_admin(&mut self) -> Result<SocketAddr, ProxyError> {
        let server = AdminServer::start(self.view.clone(), &self.monitoring)?;
        let addr = server.local_addr();
        self.admin = Some(server);
        Ok(addr)
    }

    /// Asks every worker to stop and waits for them.
    pub fn shutdown(self) -> Result<(), ProxyError> {
        self.shutdown_trigger().trigger();
        self.wait()
    }

    /// Waits until the workers stop (after a trigger, or on a fatal error).
    pub fn wait(mut self) -> Result<(), ProxyError> {
        let mut result = Ok(());
        for t in std::mem::take(&mut self.threads) {
            let r = t.join().unwrap_or_else(|_| {
                Err(ProxyError::Internal {
                    what: "a worker thread panicked".into(),
                    source: std::io::Error::other("panic"),
                })
            });
            if let Err(e) = r {
                // One worker failing stops the others: a partial proxy is worse than none.
                self.shutdown_trigger().trigger();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        // The workers are gone: the prober and the admin server stop too.
        self.shutdown_trigger().trigger();
        for t in [self.prober.take(), self.keeper.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        // Without a keeper (pool disabled, or a failed start) nothing else closes it.
        self.shared.pool.close();
        result
    }

    /// A handle that can stop the proxy from another thread (a signal handler thread).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            shared: self.shared.clone(),
        }
    }
}

/// Stops the proxy from another thread.
#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Drain, first step: `/readyz` fails so that load balancers stop routing here;
    /// everything else goes on.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Drain, second step: listeners close, the warm pool closes (its idle connections
    /// are closed and nothing joins it any more), sessions in flight finish; each worker
    /// stops when its last session ends.
    pub fn close_listeners(&self) {
        self.begin_drain();
        self.shared.close_listeners.store(true, Ordering::Release);
        self.shared.pool.close();
        self.shared.wake_all();
    }

    /// Stops at once: every session is closed.
    pub fn trigger(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
    }
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Settings {
        let conn = &config.connection;
        Settings {
            max_in_flight: conn.buffer.max_in_flight.clamp(1, uring::MAX_IOV),
            send_mode: conn.buffer.send_mode,
            pool_enabled: conn.pool.enabled && conn.pool.max_idle > 0,
            session_idle_timeout: conn.session.idle_limit(),
            queue_timeout: conn.pool.queue_timeout,
            max_retries: conn.pool.max_retries,
            retry_interval: conn.pool.retry_interval,
            balance: conn.pool.balance,
            health_enabled: conn.health_check.enabled,
            sweep_every: sweep_period(config),
        }
    }
}

/// How often the sweep runs: a tenth of the shortest timer it serves, between 100 ms and 1 s.
fn sweep_period(config: &Config) -> Duration {
    let c = &config.connection;
    let mut shortest = c.pool.idle_timeout.min(c.pool.queue_timeout);
    if let Some(session) = c.session.idle_limit() {
        shortest = shortest.min(session);
    }
    if c.health_check.enabled {
        shortest = shortest.min(c.health_check.interval);
    }
    (shortest / 10).clamp(TICK, Duration::from_secs(1))
}

/// Binds every listener, starts the workers (and the health prober), and returns once
/// every worker is accepting.
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

    // Every endpoint of every listener; a listener's endpoints are ids into this list.
    let mut endpoint_addrs = Vec::new();
    let mut listener_endpoints = Vec::new();
    for l in &config.listeners {
        let mut ids = Vec::new();
        for addr in &l.resolved {
            ids.push(endpoint_addrs.len());
            endpoint_addrs.push(*addr);
        }
        listener_endpoints.push(ids);
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
    let pool_enabled = conn.pool.enabled && conn.pool.max_idle > 0;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        close_listeners: AtomicBool::new(false),
        wake_fds,
        admission: Admission::new(conn.pool.max_active, conn.pool.max_queued, workers),
        endpoints: EndpointTable::per_listener(
            &config
                .listeners
                .iter()
                .map(|l| l.resolved.clone())
                .collect::<Vec<_>>(),
            conn.health_check.rise,
            conn.health_check.fall,
        ),
        pool: WarmPool::new(
            endpoint_addrs.len(),
            if pool_enabled { conn.pool.max_idle } else { 0 },
            conn.pool.idle_timeout,
            conn.pool.retry_interval,
            Instant::now(),
        )
        .map_err(internal("cannot set up the warm pool's watch".into()))?,
        live: Mutex::new(Arc::new(LiveConfig::new(
            &config,
            listener_endpoints.clone(),
        ))),
        live_generation: AtomicU64::new(0),
        health_config: Mutex::new(conn.health_check.clone()),
    });
    let settings = Settings::from_config(&config);

    let mut threads = Vec::new();
    let mut published = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Registration, ProxyError>>();
    for (index, socks) in sockets.into_iter().enumerate() {
        let counters = Arc::new(PublishedCounters::new(upstream::MAX_ENDPOINTS));
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
        let endpoint_addrs = endpoint_addrs.clone();
        let settings = settings.clone();
        let shared = shared.clone();
        let wake_fd = wake_raw[index];
        let ready = ready_tx.clone();
        let slot_size = conn.buffer.size;
        let pool_cfg = conn.pool.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sssonector-w{index}"))
            .spawn(move || {
                let setup = (|| {
                    let (ring, flavor) = uring::build_ring(RING_ENTRIES)?;
                    uring::probe(&ring)?;
                    let buffers = BufferRegistry::new(slots, slot_size)
                        .map_err(internal(format!("cannot map {slots} buffers of {slot_size} bytes")))?;
                    let mut ring = Ring::new(ring, buffers, &endpoint_addrs, pool_cfg.connect_timeout, pool_cfg.retry_interval, TICK);
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
                let now = Instant::now();
                let worker = Worker {
                    index,
                    ring,
                    table: ConnTable::default(),
                    listeners,
                    pool_dialing: 0,
                    live_generation: 0,
                    settings,
                    waiters: VecDeque::new(),
                    counters: WorkerCounters::default(),
                    histograms: WorkerHistograms::default(),
                    endpoint_counters: vec![EndpointCounters::default(); endpoint_addrs.len()],
                    log_limits: LogLimits::default(),
                    debug_peers: HashMap::new(),
                    queued: VecDeque::new(),
                    published: counters,
                    shared,
                    wake_fd,
                    stopping: false,
                    listeners_closed: false,
                    cancelled_all: false,
                    started: now,
                    now,
                    now_ms: 0,
                    next_sweep: now,
                    woken: Vec::new(),
                };
                worker.run()
            })
            .map_err(internal("cannot spawn a worker thread".into()))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut handle = ProxyHandle {
        threads,
        prober: None,
        keeper: None,
        shared: shared.clone(),
        view: ProxyView {
            shared: shared.clone(),
            published,
            listeners: listen_addrs,
        },
        admin: None,
        monitoring: conn.monitoring.clone(),
        reloader: Arc::new(Reloader::new(shared.clone(), config.clone())),
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
    // A control thread that cannot start stops the workers already running: a proxy
    // without its pool keeper or prober is not the one configured. Both always run: a
    // reload may turn the pool or health checks on; they idle while off.
    match keeper::spawn(shared.clone()) {
        Ok(t) => handle.keeper = Some(t),
        Err(e) => {
            let _ = handle.shutdown();
            return Err(internal("cannot spawn the pool keeper".into())(e));
        }
    }
    match crate::health::spawn(shared) {
        Ok(t) => handle.prober = Some(t),
        Err(e) => {
            let _ = handle.shutdown();
            return Err(internal("cannot spawn the health prober".into())(e));
        }
    }
    Ok(handle)
}
