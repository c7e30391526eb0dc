//! `WarmPool`: the proxy's pre-established, never-used upstream connections. One pool for
//! every worker (any worker's client can take any idle connection), sized by `max_idle`
//! in all, spread evenly over the endpoints, with a refill target that follows demand.
//! While a connection is idle nothing but the keeper's epoll watches it (see
//! [`super::keeper`]), so taking it needs no op cancelled on any ring.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::driver::sys;

mod lifetime;
mod reconfigure;

use lifetime::Lifetime;
pub use reconfigure::Reconfigure;

/// Why an idle pooled connection was closed instead of handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The server closed it (FIN) while it sat in the pool.
    ClosedByServer,
    /// The server (or a middlebox) reset it while it sat in the pool.
    Reset,
    /// Unused for `pool.idle_timeout`.
    Expired,
    /// Retired before the endpoint's learned unclaimed-connection lifetime ran out.
    Retired,
    /// Its endpoint went down (health checks).
    Flushed,
    /// Found closed by the check at handoff (the watch had not reported yet).
    DeadAtHandoff,
}

impl Discard {
    pub const ALL: [Discard; 6] = [
        Discard::ClosedByServer,
        Discard::Reset,
        Discard::Expired,
        Discard::Retired,
        Discard::Flushed,
        Discard::DeadAtHandoff,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::ClosedByServer => "closed_by_server",
            Discard::Reset => "reset",
            Discard::Expired => "expired",
            Discard::Retired => "retired",
            Discard::Flushed => "flushed",
            Discard::DeadAtHandoff => "dead_at_handoff",
        }
    }
}

/// Pool counters as of now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Gauge: idle connections in the pool.
    pub idle: u64,
    /// Gauge: pool dials in flight.
    pub dialing: u64,
    /// Discarded connections, indexed like [`Discard::ALL`].
    pub discarded: [u64; 6],
}

impl PoolStats {
    pub fn discarded(&self, reason: Discard) -> u64 {
        self.discarded[reason as usize]
    }

    /// Every idle connection that was found dead (closed, reset, or at handoff).
    pub fn dead(&self) -> u64 {
        self.discarded(Discard::ClosedByServer)
            + self.discarded(Discard::Reset)
            + self.discarded(Discard::DeadAtHandoff)
    }
}

/// An idle connection handed to a client: the fd is the caller's now.
#[derive(Debug)]
pub struct IdleConn {
    pub fd: OwnedFd,
    pub since: Instant,
}

#[derive(Debug)]
struct Entry {
    /// Unique per pooled connection: the epoll data, so an event about a connection that
    /// was taken meanwhile (and whose fd number may be reused) finds nothing.
    id: u64,
    fd: OwnedFd,
    since: Instant,
    /// The server has sent its first bytes (a greeting): a client gets them at once.
    greeted: bool,
}

#[derive(Debug, Default)]
struct EndpointPool {
    /// Oldest first; clients take the newest that greeted, else the newest (fewer
    /// connections reach a server's timeout).
    idle: VecDeque<Entry>,
    /// Pool dials in flight, all workers.
    dialing: usize,
    /// This endpoint's part of `max_idle`.
    share: usize,
    /// Sessions that wanted this endpoint in the previous and the current window.
    demand_prev: usize,
    demand_cur: usize,
    /// The endpoint's down epoch last acted on (a new one means: flush).
    seen_down_epoch: u64,
    /// After a failed pool dial, no refill before this (health checks may be off, and
    /// nothing else would stop redialing a dead endpoint).
    backoff_until: Option<Instant>,
    lifetime: Lifetime,
    /// A reload added (or revived) this endpoint: until then its target is its full
    /// share, as every endpoint's is after the start.
    warm_until: Option<Instant>,
}

impl EndpointPool {
    /// A pooled connection made at `since` ended unused (closed by its server, or retired
    /// before the server would close it). Replacing it at once, whatever its age, would
    /// let a server that closes connections soon after accepting them (a banner then a
    /// FIN, a short handshake timeout, a hostile peer) drive a redial loop with no client
    /// at all. So no connection is redialed only to keep the pool warm sooner than
    /// `retry_interval` after the one it replaces was made: at most `share` dials per
    /// `retry_interval` for such an endpoint.
    fn young_close(&mut self, since: Instant, now: Instant, retry_interval: Duration) {
        let until = crate::deadline::after(since, retry_interval);
        if until > now && !matches!(self.backoff_until, Some(b) if b >= until) {
            self.backoff_until = Some(until);
        }
    }
}

#[derive(Debug)]
pub(super) struct PoolState {
    endpoints: Vec<EndpointPool>,
    next_id: u64,
    /// Demand is counted per window of `idle_timeout`.
    window_start: Instant,
    /// Until then the target is the full share: the pool is warm from startup.
    warm_until: Instant,
    /// No connection joins the pool any more.
    closed: bool,
    /// `pool.idle_timeout` and `pool.retry_interval`: under the lock, so that a reload can
    /// change them (see [`WarmPool::reconfigure`]).
    idle_timeout: Duration,
    /// The refill backoff after a failed dial; and the shortest spacing of redials that
    /// only keep a connection warm (see [`PoolState::on_event`]).
    retry_interval: Duration,
}

/// Epoll data of the keeper's own wake-up eventfd; pooled connections use
/// `endpoint << ID_BITS | id`.
pub(super) const WAKE_DATA: u64 = u64::MAX;
const ID_BITS: u32 = 44;

/// Dials one endpoint may have in flight for the pool, whatever its deficit: a burst of
/// refills is spread out.
pub const MAX_POOL_DIALS: usize = 32;

/// The proxy's warm pool.
#[derive(Debug)]
pub struct WarmPool {
    state: Mutex<PoolState>,
    pub(super) epoll: OwnedFd,
    pub(super) wake: OwnedFd,
    discarded: [AtomicU64; 6],
}

impl WarmPool {
    /// A pool of `max_idle` connections in all, spread evenly over `endpoints`.
    pub fn new(
        endpoints: usize,
        max_idle: usize,
        idle_timeout: Duration,
        retry_interval: Duration,
        now: Instant,
    ) -> std::io::Result<WarmPool> {
        let epoll = sys::epoll()?;
        let wake = sys::eventfd_nonblocking()?;
        sys::epoll_watch_readable(epoll.as_raw_fd(), wake.as_raw_fd(), WAKE_DATA)?;
        let n = endpoints.max(1);
        Ok(WarmPool {
            state: Mutex::new(PoolState {
                endpoints: (0..endpoints)
                    .map(|i| EndpointPool {
                        share: share(max_idle, n, i),
                        ..EndpointPool::default()
                    })
                    .collect(),
                next_id: 0,
                window_start: now,
                warm_until: crate::deadline::after(now, idle_timeout),
                closed: false,
                idle_timeout,
                retry_interval,
            }),
            epoll,
            wake,
            discarded: Default::default(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves plain counters and fds, all still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection of `endpoint` for a client (and, with `count_demand`, records
    /// that a session wanted the endpoint): the newest one whose server has greeted, else
    /// the newest. A connection dialed a moment ago to replace one taken may still be
    /// waiting for a slow server's greeting (a fork, an auth step, a TLS handshake), while
    /// an older one has it queued already. Connections due for retirement are left to
    /// the keeper: their server may close them any moment.
    pub fn take(&self, endpoint: usize, now: Instant, count_demand: bool) -> Option<IdleConn> {
        let entry = {
            let mut st = self.lock();
            let idle_timeout = st.idle_timeout;
            st.rotate(now, idle_timeout);
            let p = st.endpoints.get_mut(endpoint)?;
            if count_demand {
                p.demand_cur += 1;
            }
            let retire = p.lifetime.retire_age(idle_timeout);
            let young = |e: &Entry| now.saturating_duration_since(e.since) < retire;
            let pick = p
                .idle
                .iter()
                .rposition(|e| e.greeted && young(e))
                .or_else(|| p.idle.iter().rposition(young))?;
            p.idle.remove(pick)?
        };
        // It is the caller's now: the keeper finds nothing for an event that raced.
        let _ = sys::epoll_unwatch(self.epoll.as_raw_fd(), entry.fd.as_raw_fd());
        Some(IdleConn {
            fd: entry.fd,
            since: entry.since,
        })
    }

    /// Reserves the pool dials `endpoint` needs to reach its target, at most `max`; the
    /// caller makes them and reports each with [`put`](Self::put) or
    /// [`dial_ended`](Self::dial_ended).
    pub fn reserve_dials(&self, endpoint: usize, now: Instant, max: usize) -> usize {
        let mut st = self.lock();
        if st.closed {
            return 0;
        }
        let window = st.idle_timeout;
        st.rotate(now, window);
        let warm = now < st.warm_until;
        let Some(p) = st.endpoints.get_mut(endpoint) else {
            return 0;
        };
        if p.backoff_until.is_some_and(|t| now < t) {
            return 0;
        }
        let target = if warm || p.warm_until.is_some_and(|t| now < t) {
            p.share
        } else {
            p.share.min(p.demand_prev.max(p.demand_cur))
        };
        let n = target
            .saturating_sub(p.idle.len() + p.dialing)
            .min(MAX_POOL_DIALS.saturating_sub(p.dialing))
            .min(max);
        p.dialing += n;
        n
    }

    /// A reserved dial ended without a connection for the pool.
    pub fn dial_ended(&self, endpoint: usize) {
        let mut st = self.lock();
        if let Some(p) = st.endpoints.get_mut(endpoint) {
            p.dialing = p.dialing.saturating_sub(1);
        }
    }

    /// A reserved dial failed: no refill of `endpoint` before `until`.
    pub fn dial_failed(&self, endpoint: usize, until: Instant) {
        let mut st = self.lock();
        if let Some(p) = st.endpoints.get_mut(endpoint) {
            p.dialing = p.dialing.saturating_sub(1);
            p.backoff_until = Some(until);
        }
    }

    /// A reserved dial connected: the connection joins the pool, watched from now on.
    /// `down_epoch` is the endpoint's down epoch when the caller saw it up: if the keeper
    /// has flushed the endpoint since, the connection is refused like the ones flushed.
    /// Gives the fd back when the pool does not take it (closed, endpoint went down, or
    /// no watch possible); close it with [`close_unused`].
    pub fn put(
        &self,
        endpoint: usize,
        fd: OwnedFd,
        now: Instant,
        down_epoch: u64,
    ) -> Result<(), OwnedFd> {
        let mut st = self.lock();
        let closed = st.closed;
        let Some(p) = st.endpoints.get_mut(endpoint) else {
            return Err(fd);
        };
        p.dialing = p.dialing.saturating_sub(1);
        // No share: a reload retired the endpoint or turned the pool off meanwhile.
        if closed || p.seen_down_epoch != down_epoch || p.share == 0 {
            return Err(fd);
        }
        let id = st.next_id;
        st.next_id += 1;
        let data = (endpoint as u64) << ID_BITS | (id & ((1 << ID_BITS) - 1));
        // Watched before anyone can take it, under the lock: the keeper finds the entry
        // for any event, and a taker never meets an fd still being added.
        if let Err(e) =
            sys::epoll_watch_first_bytes_or_close(self.epoll.as_raw_fd(), fd.as_raw_fd(), data)
        {
            tracing::warn!("internal: cannot watch a pooled connection: {e}; closing it");
            return Err(fd);
        }
        st.endpoints[endpoint].idle.push_back(Entry {
            id: data,
            fd,
            since: now,
            greeted: false,
        });
        Ok(())
    }

    /// Counts a connection discarded outside the keeper (the handoff check).
    pub fn count_discard(&self, reason: Discard, n: u64) {
        self.discarded[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn stats(&self) -> PoolStats {
        self.stats_and_idle().0
    }

    /// The pool's counters and each endpoint's idle connections, by id, under one lock.
    pub fn stats_and_idle(&self) -> (PoolStats, Vec<usize>) {
        let st = self.lock();
        let idle: Vec<usize> = st.endpoints.iter().map(|p| p.idle.len()).collect();
        let stats = PoolStats {
            idle: idle.iter().sum::<usize>() as u64,
            dialing: st.endpoints.iter().map(|p| p.dialing as u64).sum(),
            discarded: std::array::from_fn(|i| self.discarded[i].load(Relaxed)),
        };
        (stats, idle)
    }

    /// Idle connections of one endpoint (0 for an id the pool does not know yet).
    pub fn idle(&self, endpoint: usize) -> usize {
        self.lock()
            .endpoints
            .get(endpoint)
            .map_or(0, |p| p.idle.len())
    }

    /// Idle connections, all endpoints.
    pub fn total_idle(&self) -> usize {
        self.lock().endpoints.iter().map(|p| p.idle.len()).sum()
    }

    /// `pool.idle_timeout` in force.
    pub fn idle_timeout(&self) -> Duration {
        self.lock().idle_timeout
    }

    /// Wakes the keeper (stop, or an endpoint's health changed).
    pub fn wake_keeper(&self) {
        sys::eventfd_signal(self.wake.as_raw_fd());
    }

    /// Closes the pool: nothing joins it any more, and every idle connection is closed.
    pub fn close(&self) {
        let drained: Vec<Entry> = {
            let mut st = self.lock();
            st.closed = true;
            st.endpoints
                .iter_mut()
                .flat_map(|p| p.idle.drain(..))
                .collect()
        };
        for e in drained {
            close_unused(e.fd);
        }
    }

    pub(super) fn discarded_counter(&self, reason: Discard) -> &AtomicU64 {
        &self.discarded[reason as usize]
    }
}

/// Endpoint `i`'s part of `max_idle` spread evenly over `n` endpoints.
fn share(max_idle: usize, n: usize, i: usize) -> usize {
    max_idle / n + usize::from(i < max_idle % n)
}

/// Closes a connection no client used. What its server sent first (a greeting) is
/// discarded before, so the server sees a FIN, not the reset that closing a socket with
/// unread data sends (MariaDB would log an aborted connection).
pub fn close_unused(fd: OwnedFd) {
    sys::discard_unread(fd.as_raw_fd());
    drop(fd);
}

/// What the keeper does with one endpoint's idle connections.
pub(super) struct Removed {
    pub fds: Vec<OwnedFd>,
    /// (endpoint, lifetime) newly learned, to warn about once the lock is released.
    pub learned: Vec<(usize, Duration)>,
    /// Connections gone that the pool should replace.
    pub replace: usize,
}

impl PoolState {
    /// Starts a new demand window when the current one is over.
    fn rotate(&mut self, now: Instant, window: Duration) {
        if now.saturating_duration_since(self.window_start) >= window {
            self.window_start = now;
            for p in &mut self.endpoints {
                p.demand_prev = std::mem::take(&mut p.demand_cur);
            }
        }
    }

    /// The watch on connection `data` fired with `events`: the server greeted (the watch
    /// goes on, for a close only), or it closed or reset the connection (it leaves the pool).
    pub fn on_event(
        &mut self,
        pool: &WarmPool,
        data: u64,
        events: u32,
        now: Instant,
        out: &mut Removed,
    ) {
        let endpoint = (data >> ID_BITS) as usize;
        let (idle_timeout, retry_interval) = (self.idle_timeout, self.retry_interval);
        let Some(p) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        // Taken meanwhile: the client owns it now.
        let Some(pos) = p.idle.iter().position(|e| e.id == data) else {
            return;
        };
        let closed = (libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP) as u32;
        if events & closed == 0 {
            let e = &mut p.idle[pos];
            e.greeted = true;
            match sys::epoll_rewatch_close(pool.epoll.as_raw_fd(), e.fd.as_raw_fd(), data) {
                Ok(()) => return,
                // Unwatchable: not kept, or a close would go unseen.
                Err(err) => tracing::warn!("internal: cannot watch a pooled connection: {err}"),
            }
        }
        let Some(entry) = p.idle.remove(pos) else {
            return;
        };
        let reset = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0
            || sys::socket_error(entry.fd.as_raw_fd()).is_some();
        let reason = if reset {
            Discard::Reset
        } else {
            Discard::ClosedByServer
        };
        pool.discarded_counter(reason).fetch_add(1, Relaxed);
        let age = now.saturating_duration_since(entry.since);
        p.young_close(entry.since, now, retry_interval);
        if let Some(t) = p.lifetime.observe(age, now, idle_timeout) {
            if !p.lifetime.warned {
                p.lifetime.warned = true;
                out.learned.push((endpoint, t));
            }
        }
        out.fds.push(entry.fd);
        out.replace += 1;
    }

    /// Flushes endpoints that went down; expires and retires old idle connections.
    /// `down_epoch` gives each endpoint's current down epoch.
    pub fn sweep(
        &mut self,
        pool: &WarmPool,
        now: Instant,
        down_epoch: impl Fn(usize) -> u64,
        out: &mut Removed,
    ) {
        let (idle_timeout, retry_interval) = (self.idle_timeout, self.retry_interval);
        for (ep, p) in self.endpoints.iter_mut().enumerate() {
            let epoch = down_epoch(ep);
            if p.seen_down_epoch != epoch {
                p.seen_down_epoch = epoch;
                let n = p.idle.len();
                out.fds.extend(p.idle.drain(..).map(|e| e.fd));
                pool.discarded_counter(Discard::Flushed)
                    .fetch_add(n as u64, Relaxed);
            }
            p.lifetime.forget_if_lapsed(now);
            let retire = p.lifetime.retire_age(idle_timeout);
            while let Some(e) = p.idle.front() {
                let e_since = e.since;
                let age = now.saturating_duration_since(e.since);
                let reason = if age >= idle_timeout {
                    Discard::Expired
                } else if age >= retire {
                    Discard::Retired
                } else {
                    break;
                };
                if let Some(e) = p.idle.pop_front() {
                    out.fds.push(e.fd);
                }
                pool.discarded_counter(reason).fetch_add(1, Relaxed);
                if reason == Discard::Retired {
                    p.young_close(e_since, now, retry_interval);
                    out.replace += 1;
                }
            }
        }
    }

    /// When the next idle connection expires or retires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let idle_timeout = self.idle_timeout;
        self.endpoints
            .iter()
            .filter_map(|p| {
                p.idle
                    .front()
                    .map(|e| crate::deadline::after(e.since, p.lifetime.retire_age(idle_timeout)))
            })
            .min()
    }
}

/// The raw fd of a pooled connection (tests).
impl IdleConn {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
