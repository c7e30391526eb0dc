//! One worker thread: one driver (io_uring or epoll), its listener sockets and the
//! [`Context`] its sessions live in (the warm pool is shared: [`Shared::pool`]). The loop
//! here reaps completions and routes each once, by its [`Op`]; the sessions' own ops go
//! to the session state machine. `start.rs` builds a worker on its own thread
//! ([`crate::proxy::start`] spawns them).

use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadline;
use crate::driver::{self, sys, Completion, Driver};
use crate::error::ProxyError;
use crate::metrics::PublishedCounters;
use crate::session::{Close, Context, ListenerId, Op};
use crate::shared::Shared;

mod start;

pub(crate) use start::{spawn, WorkerParts};

/// Completions a worker reaps at once without growing its batch.
const CQES_KEPT: usize = 1024;
/// How long a stopping worker waits for zero-copy notifications of closed sessions.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The worker's own ops in flight (not any session's), counted at submit and at their
/// final completion: the stop knows from these, not from the driver's total, what is
/// left besides sessions.
#[derive(Debug, Default)]
struct WorkerOps {
    tick: usize,
    wake: usize,
    accepts: usize,
    cancels: usize,
}

impl WorkerOps {
    fn total(&self) -> usize {
        self.tick + self.wake + self.accepts + self.cancels
    }
}

pub(crate) struct Worker<D: Driver> {
    pub(crate) ctx: Context<D>,
    /// The [`Shared::live_generation`] this worker applied last.
    live_generation: u64,
    published: Arc<PublishedCounters>,
    wake_fd: RawFd,
    cancelled_all: bool,
    ops: WorkerOps,
    started: Instant,
    next_sweep: Instant,
}

impl<D: Driver> Worker<D> {
    fn run(mut self) -> Result<(), ProxyError> {
        for i in 0..self.ctx.listeners.len() {
            self.arm_accept(i);
        }
        self.arm_tick(false);
        self.arm_wake();
        self.ctx.refill();
        let mut cqes = Vec::with_capacity(CQES_KEPT);
        let mut stop_deadline = self.ctx.now;
        loop {
            let entered =
                self.ctx
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
                let c = &mut self.ctx;
                c.counters.completions_dropped += 1;
                if let Some(held_back) = c.log_limits.dropped_completion.hit() {
                    tracing::error!(
                        dropped = c.counters.completions_dropped,
                        held_back,
                        "io_uring dropped a completion (CQ overflow); continuing"
                    );
                }
            }
            self.ctx.now = Instant::now();
            self.ctx.now_ms = deadline::millis(self.ctx.now.duration_since(self.started));
            self.ctx.driver.reap(&mut cqes);
            for &c in &cqes {
                self.handle(c);
            }
            // A burst's batch must not stay resident once it is handled.
            if cqes.capacity() > 4 * CQES_KEPT {
                cqes = Vec::with_capacity(CQES_KEPT);
            }
            if self.ctx.stopping && self.ctx.table.is_empty() {
                if !self.cancelled_all {
                    self.cancelled_all = true;
                    stop_deadline = deadline::after(self.ctx.now, STOP_GRACE);
                    self.ops.cancels += 1;
                    self.ctx.driver.cancel_all(Op::Cancel.encode());
                    // Wakes the loop while zero-copy notifications may still be due.
                    self.arm_tick(true);
                }
                // Every session is gone: what is in flight besides the worker's own ops
                // are zero-copy notifications of closed sessions.
                let notifications = self.ctx.driver.in_flight().saturating_sub(self.ops.total());
                if notifications == 0 && self.ops.total() == self.ops.tick {
                    // Nothing left but the wake-up tick (re-armed while waiting).
                    break;
                }
                if self.ctx.now >= stop_deadline {
                    // Only zero-copy notifications can be left (every session is gone):
                    // their pages stay pinned by the kernel, so leaving is safe.
                    tracing::warn!(
                        ops = self.ctx.driver.in_flight(),
                        "worker stopping with zero-copy notifications still due"
                    );
                    break;
                }
            }
        }
        self.publish();
        self.published.finish();
        Ok(())
    }

    /// Routes one completion by what its op was.
    fn handle(&mut self, c: Completion) {
        let Some(op) = Op::decode(c.user_data) else {
            tracing::error!(
                user_data = c.user_data,
                "internal: completion with an unknown user_data"
            );
            return;
        };
        match op {
            Op::Accept(l) => self.on_accept(l, c.res, c.more),
            Op::Tick => self.on_tick(c.res, c.more),
            Op::Wake => self.on_wake(c.res),
            Op::Cancel => self.ops.cancels -= 1,
            Op::Session(id, op) => self.ctx.on_session_op(id, op, c),
        }
    }

    fn arm_tick(&mut self, one_shot: bool) {
        self.ops.tick += 1;
        self.ctx.driver.tick(Op::Tick.encode(), one_shot);
    }

    fn arm_wake(&mut self) {
        self.ops.wake += 1;
        self.ctx.driver.wait_wake(self.wake_fd, Op::Wake.encode());
    }

    fn arm_accept(&mut self, index: usize) {
        let l = &mut self.ctx.listeners[index];
        l.accept_armed = true;
        let fd = l.fd.as_raw_fd();
        self.ops.accepts += 1;
        self.ctx
            .driver
            .accept(fd, Op::Accept(ListenerId(index as u16)).encode());
    }

    fn on_accept(&mut self, listener: ListenerId, res: i32, more: bool) {
        let index = listener.index();
        if !more {
            self.ops.accepts -= 1;
            self.ctx.listeners[index].accept_armed = false;
        }
        if res < 0 {
            if res != -libc::ECANCELED && !self.ctx.listeners_closed {
                self.ctx.counters.accept_errors += 1;
                if let Some(held_back) = self.ctx.log_limits.accept.hit() {
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
        if self.ctx.stopping {
            sys::close(res, false);
            return;
        }
        if !self.ctx.listeners[index].accept_armed && !self.ctx.listeners_closed {
            self.arm_accept(index);
        }
        self.ctx.accept_client(listener, res);
    }

    fn on_tick(&mut self, res: i32, more: bool) {
        if !more {
            self.ops.tick -= 1;
        }
        // While stopping, the tick only wakes the loop to check its grace period.
        if !more && res != -libc::ECANCELED && (!self.ctx.stopping || self.cancelled_all) {
            // Multishot timeouts end on CQ overflow, and kernels before 6.4 refuse them
            // (EINVAL): fall back to re-arming a one-shot tick.
            self.arm_tick(res == -libc::EINVAL);
        }
        if res == -libc::EINVAL {
            return;
        }
        if self.ctx.listeners_closed && self.ctx.client_sessions() == 0 {
            self.begin_stop();
        }
        if !self.ctx.stopping {
            for i in 0..self.ctx.listeners.len() {
                if !self.ctx.listeners[i].accept_armed && !self.ctx.listeners_closed {
                    self.arm_accept(i);
                }
            }
            if self.ctx.now >= self.next_sweep {
                self.next_sweep = deadline::after(self.ctx.now, self.ctx.settings.sweep_every);
                self.ctx.sweep();
            }
            self.ctx.refill();
            // A parked half re-armed without data leaves its slot in the ring: give the
            // rest of the wait list another go.
            self.ctx.serve_waiters();
        }
        self.publish();
    }

    fn on_wake(&mut self, res: i32) {
        self.ops.wake -= 1;
        let shared = self.ctx.shared.clone();
        if shared.stopping() {
            self.begin_stop();
            return;
        }
        if shared.listeners_closing() {
            self.close_listeners();
        }
        if shared.live_generation.load(Ordering::Acquire) != self.live_generation {
            self.apply_live_config();
        }
        self.ctx.take_grants();
        self.ctx.refill();
        if res != -libc::ECANCELED {
            self.arm_wake();
        }
    }

    /// Stops accepting and closes every session and idle connection; the loop ends once
    /// all ops are done.
    fn begin_stop(&mut self) {
        if self.ctx.stopping {
            return;
        }
        self.ctx.stopping = true;
        for l in &self.ctx.listeners {
            self.ops.cancels += 1;
            self.ctx
                .driver
                .cancel_fd(l.fd.as_raw_fd(), Op::Cancel.encode());
        }
        for id in self.ctx.table.ids() {
            self.ctx.begin_close(id, Close::Fin);
        }
    }

    /// Drain: stops accepting for good (a connect to the port is refused from now on);
    /// sessions in flight go on, and the worker stops when the last one ends (`on_tick`).
    /// The shared warm pool was closed by the trigger, so nothing refills it.
    fn close_listeners(&mut self) {
        if self.ctx.listeners_closed {
            return;
        }
        self.ctx.listeners_closed = true;
        for l in &self.ctx.listeners {
            // shutdown() takes a listening socket out of LISTEN at once (its pending
            // accept completes with an error); close() would wait for the accept op.
            sys::shutdown_listener(l.fd.as_raw_fd());
        }
    }

    fn publish(&mut self) {
        let c = &mut self.ctx;
        let b = c.driver.buffers();
        c.counters.buffer_slots_total = b.count() as u64;
        c.counters.buffer_slots_in_use = b.in_use() as u64;
        c.counters.buffer_slots_in_use_max = b.in_use_max() as u64;
        c.counters.buffer_allocations = b.allocations();
        c.counters.buffer_waiters = (c.waiters.len() + c.waiters_empty.len()) as u64;
        // Every pool dial is a table entry until it joins the pool.
        c.counters.sessions_active = c.client_sessions() as u64;
        let (mut to, mut from) = (0, 0);
        for (ep, e) in c.endpoint_counters.iter().enumerate() {
            self.published.publish_endpoint(ep, e);
            to += e.bytes_to;
            from += e.bytes_from;
        }
        // The endpoint table only grows, so these sums never go down.
        c.counters.bytes_client_to_upstream = to;
        c.counters.bytes_upstream_to_client = from;
        self.published.publish_histograms(&c.histograms);
        self.published.publish(&c.counters);
    }

    /// Takes the latest [`crate::settings::LiveConfig`]: grows the per-endpoint tables,
    /// then switches the listeners' endpoint lists, settings and timeouts. Sessions are
    /// not touched, and the shared warm pool was reconfigured by the reload itself.
    fn apply_live_config(&mut self) {
        let c = &mut self.ctx;
        // The generation first: a reload published after this read is applied next time.
        self.live_generation = c.shared.live_generation.load(Ordering::Acquire);
        let live = c
            .shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let shared: Arc<Shared> = c.shared.clone();
        let table = &shared.endpoints;
        let n = table.len();
        while c.driver.endpoints() < n {
            let addr = table.get(c.driver.endpoints()).addr;
            c.driver.add_endpoint(addr);
        }
        if c.endpoint_counters.len() < n {
            c.endpoint_counters.resize(n, Default::default());
        }
        c.driver
            .set_dial_timeouts(live.connect_timeout, live.retry_interval);
        c.settings = live.settings.clone();
        for (l, ids) in c.listeners.iter_mut().zip(&live.listener_endpoints) {
            l.endpoints = ids.clone();
        }
        self.next_sweep = c.now;
        if !c.stopping && !c.listeners_closed {
            c.refill();
        }
        tracing::debug!(
            worker = c.index,
            endpoints = n,
            "worker applied the reloaded configuration"
        );
    }
}
