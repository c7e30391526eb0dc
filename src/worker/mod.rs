//! One worker thread: one driver (io_uring or epoll), its listener sockets, buffer
//! registry and connection table (the warm pool is shared: [`Shared::pool`]); `start.rs`
//! builds a worker on its own thread ([`crate::proxy::start`] spawns them).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Admit, Ticket};
use crate::buffer::Registration;
use crate::config::{Balance, SendMode};
use crate::conn::{ConnTable, State, CLIENT_TO_UPSTREAM, UPSTREAM_TO_CLIENT};
use crate::deadline;
use crate::driver::{self, sys, Completion, Driver, SendOp};
use crate::error::ProxyError;
use crate::logging::LogLimits;
use crate::metrics::{EndpointCounters, PublishedCounters, WorkerCounters, WorkerHistograms};
use crate::shared::Shared;
use crate::upstream::{self, Discard, EndpointTable};

use op::{OpKind, Token};

mod close;
mod connect;
pub(crate) mod op;
mod start;

pub(crate) use start::{spawn, WorkerParts};

/// How often a worker publishes its counters, refills its pool and checks endpoint health.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopping worker waits for zero-copy notifications of closed sessions.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Slab key used by ops that belong to the worker, not to a session.
const WORKER_KEY: usize = op::MAX_KEYS - 1;

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
    /// Sessions whose peer took no byte for this long while data waited are closed;
    /// `None`: never.
    pub send_timeout: Option<Duration>,
    pub queue_timeout: Duration,
    pub max_retries: u32,
    pub retry_interval: Duration,
    pub balance: Balance,
    pub health_enabled: bool,
    /// How often the sweep walks the idle pool, the active list and the queue.
    pub sweep_every: Duration,
}

pub(crate) struct Worker<D: Driver> {
    pub(crate) index: usize,
    pub driver: D,
    pub table: ConnTable,
    pub listeners: Vec<WorkerListener>,
    pub settings: Settings,
    /// Directions parked on ENOBUFS that held slots, served first come first served as
    /// slots return, after every one of `waiters_empty`.
    pub waiters: VecDeque<(usize, u32, usize)>,
    /// Directions parked on ENOBUFS holding no slot: served first. Sessions that hold
    /// nothing never queue behind those that hold the pool (peers that do not read), so
    /// how long they wait does not grow with the number of such sessions.
    pub waiters_empty: VecDeque<(usize, u32, usize)>,
    /// Directions that held slots when the send-timeout sweep last looked (each at most
    /// once: `Direction::listed`); entries of closed sessions go on the next sweep.
    pub holding: Vec<(usize, u32, usize)>,
    /// Armed receives of directions that already hold a slot: each may still take one
    /// from the ring, so they count against the reserve (`buffer::reserve`).
    pub holder_armed: usize,
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

impl<D: Driver> Worker<D> {
    fn run(mut self) -> Result<(), ProxyError> {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.driver
            .tick(Token::new(WORKER_KEY, 0, OpKind::Tick).encode(), false);
        self.driver.wait_wake(
            self.wake_fd,
            Token::new(WORKER_KEY, 0, OpKind::Wake).encode(),
        );
        self.refill();
        let mut cqes = Vec::with_capacity(1024);
        let mut stop_deadline = self.now;
        loop {
            let entered = self
                .driver
                .submit_and_wait()
                .map_err(|source| ProxyError::Internal {
                    what: "io_uring_enter failed".into(),
                    source,
                })?;
            if entered == driver::Entered::DroppedCompletion {
                // The kernel could not buffer a completion and dropped it: one op's
                // outcome is lost (its session may stay until the inactivity timeout),
                // but the ring and every other session are fine. Counted and logged;
                // the proxy goes on.
                self.counters.completions_dropped += 1;
                if let Some(held_back) = self.log_limits.dropped_completion.hit() {
                    tracing::error!(
                        dropped = self.counters.completions_dropped,
                        held_back,
                        "io_uring dropped a completion (CQ overflow); continuing"
                    );
                }
            }
            self.now = Instant::now();
            self.now_ms = deadline::millis(self.now.duration_since(self.started));
            self.driver.reap(&mut cqes);
            for &c in &cqes {
                self.dispatch(c);
            }
            if self.stopping && self.table.is_empty() {
                if !self.cancelled_all {
                    self.cancelled_all = true;
                    stop_deadline = deadline::after(self.now, STOP_GRACE);
                    self.driver
                        .cancel_all(Token::new(WORKER_KEY, 0, OpKind::Cancel).encode());
                    // Wakes the loop while zero-copy notifications may still be due.
                    self.driver
                        .tick(Token::new(WORKER_KEY, 0, OpKind::Tick).encode(), true);
                }
                if self.driver.in_flight() == 0 {
                    break;
                }
                if self.now >= stop_deadline {
                    // Only zero-copy notifications can be left (every session is gone):
                    // their pages stay pinned by the kernel, so leaving is safe.
                    tracing::warn!(
                        ops = self.driver.in_flight(),
                        "worker stopping with zero-copy notifications still due"
                    );
                    break;
                }
                if self.driver.in_flight() == 1 {
                    // Only the wake-up tick is left (it is re-armed while waiting).
                    break;
                }
            }
        }
        self.publish();
        self.published.finish();
        Ok(())
    }

    fn dispatch(&mut self, c: Completion) {
        let Some(token) = Token::decode(c.user_data) else {
            tracing::error!(
                user_data = c.user_data,
                "internal: completion with an unknown user_data"
            );
            return;
        };
        let res = c.res;
        match token.op {
            OpKind::Accept => self.on_accept(token.key as usize, res, c.more),
            OpKind::Tick => {
                // While stopping, the tick only wakes the loop to check its grace period.
                if !c.more && res != -libc::ECANCELED && (!self.stopping || self.cancelled_all) {
                    // Multishot timeouts end on CQ overflow, and kernels before 6.4
                    // refuse them (EINVAL): fall back to re-arming a one-shot tick.
                    self.driver.tick(
                        Token::new(WORKER_KEY, 0, OpKind::Tick).encode(),
                        res == -libc::EINVAL,
                    );
                }
                if res != -libc::EINVAL {
                    self.on_tick();
                }
            }
            OpKind::Wake => self.on_wake(res),
            OpKind::Cancel if token.key as usize == WORKER_KEY => {}
            _ => self.on_session_op(token, c),
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let fd = self.listeners[index].fd.as_raw_fd();
        self.listeners[index].accept_armed = true;
        self.driver
            .accept(fd, Token::new(index, 0, OpKind::Accept).encode());
    }

    fn on_accept(&mut self, index: usize, res: i32, more: bool) {
        if !more {
            self.listeners[index].accept_armed = false;
        }
        if res < 0 {
            if res != -libc::ECANCELED && !self.listeners_closed {
                self.counters.accept_errors += 1;
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
                self.next_sweep = deadline::after(self.now, self.settings.sweep_every);
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
            self.driver.wait_wake(
                self.wake_fd,
                Token::new(WORKER_KEY, 0, OpKind::Wake).encode(),
            );
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
            self.driver.cancel_fd(
                l.fd.as_raw_fd(),
                Token::new(WORKER_KEY, 0, OpKind::Cancel).encode(),
            );
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
        let b = self.driver.buffers();
        self.counters.buffer_slots_total = b.count() as u64;
        self.counters.buffer_slots_in_use = b.in_use() as u64;
        self.counters.buffer_slots_in_use_max = b.in_use_max() as u64;
        self.counters.buffer_allocations = b.allocations();
        self.counters.buffer_waiters = (self.waiters.len() + self.waiters_empty.len()) as u64;
        // Every pool dial is a table entry until it joins the pool.
        self.counters.sessions_active = self.client_sessions() as u64;
        let (mut to, mut from) = (0, 0);
        for (ep, c) in self.endpoint_counters.iter().enumerate() {
            self.published.publish_endpoint(ep, c);
            to += c.bytes_to;
            from += c.bytes_from;
        }
        // The endpoint table only grows, so these sums never go down.
        self.counters.bytes_client_to_upstream = to;
        self.counters.bytes_upstream_to_client = from;
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
                let waited = deadline::millis(self.now.saturating_duration_since(t.since));
                self.counters.queue_wait_ms = self.counters.queue_wait_ms.saturating_add(waited);
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

    fn on_session_op(&mut self, token: Token, c: Completion) {
        let key = token.key as usize;
        let res = c.res;
        let Some(s) = self.table.get_mut(key, token.gen) else {
            // A completion for a freed entry: nothing of it can be in use any more. A
            // zero-copy notification still holds its slot.
            if token.op == OpKind::Send && c.notif {
                self.release_slot(token.slot);
            }
            self.drop_received(c.buffer);
            return;
        };
        // A zero-copy send's notification is not counted as one of the session's ops: it
        // only comes once the peer acknowledged the data (or the socket is gone), so a
        // closing session must not wait for it; the slot it holds keeps a reference.
        let done = if token.op == OpKind::Send {
            !c.notif
        } else {
            !c.more
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
            OpKind::Recv => self.on_recv(key, token.gen, token.dir as usize, res, c.buffer),
            OpKind::Send => self.on_send(key, token.gen, token.dir as usize, token.slot, c),
            OpKind::SendMsg => {
                self.on_send_msg(key, token.gen, token.dir as usize, token.slot, res)
            }
            OpKind::Hup => self.on_hangup(key, token.gen, token.dir as usize, res),
            OpKind::ConnectTimeout | OpKind::Cancel => {}
            OpKind::Accept | OpKind::Tick | OpKind::Wake => {}
        }
        self.settle(key, token.gen);
    }

    /// Which send op a direction uses for `len` bytes.
    pub(crate) fn send_op(&self, remote: bool, len: usize) -> SendOp {
        let registered = self.driver.buffers().registration() == Registration::Registered;
        match self.settings.send_mode {
            SendMode::Send => SendOp::Send,
            SendMode::Fixed if registered => SendOp::WriteFixed,
            SendMode::Fixed => SendOp::Send,
            SendMode::Zerocopy => SendOp::ZeroCopy,
            // Loopback copies zero-copy pages anyway, and small sends lose to the
            // notification round trip; zero-copy from registered slots pays off for
            // large writes to a real network.
            SendMode::Auto if remote && registered && len >= ZEROCOPY_MIN => SendOp::ZeroCopy,
            SendMode::Auto => SendOp::Send,
        }
    }
}

/// `Session::endpoint` of a pool dial whose reservation was already given back.
const NO_ENDPOINT: u16 = u16::MAX;

/// The smallest send `send_mode: auto` makes zero-copy.
const ZEROCOPY_MIN: usize = 16 * 1024;
