//! `WarmPool`: one worker's pre-established, never-used upstream connections, per endpoint,
//! oldest first, with a refill target that follows recent demand.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// An established upstream connection waiting for a client. Nothing is ever read from
/// or written to it before handoff, so bytes a server sends first stay queued for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleConn {
    pub fd: RawFd,
    pub since: Instant,
}

#[derive(Debug, Default)]
struct EndpointPool {
    idle: VecDeque<IdleConn>,
    /// Pool dials in flight.
    dialing: usize,
    /// This worker's part of `max_idle` for the endpoint.
    share: usize,
    /// Sessions that wanted this endpoint in the previous and the current window.
    demand_prev: usize,
    demand_cur: usize,
    /// The endpoint's down epoch last acted on (a new one means: flush).
    seen_down_epoch: u64,
    /// After a failed pool dial, no refill before this (health checks may be off, and
    /// nothing else would stop redialing a dead endpoint every tick).
    backoff_until: Option<Instant>,
}

/// One worker's warm connections.
#[derive(Debug)]
pub struct WarmPool {
    pools: Vec<EndpointPool>,
    /// Demand is counted per window of `idle_timeout`.
    window: Duration,
    window_start: Instant,
    /// Until then the target is the full share: the pool is warm from startup.
    warm_until: Instant,
}

impl WarmPool {
    /// `max_idle` per endpoint is split across `workers`; this is worker `worker`'s part.
    pub fn new(
        endpoints: usize,
        worker: usize,
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
        now: Instant,
    ) -> WarmPool {
        let share = WarmPool::share_of(max_idle, worker, workers);
        WarmPool {
            pools: (0..endpoints)
                .map(|_| EndpointPool {
                    share,
                    ..EndpointPool::default()
                })
                .collect(),
            window: idle_timeout,
            window_start: now,
            warm_until: now + idle_timeout,
        }
    }

    /// Worker `worker`'s part of `max_idle` among `workers`.
    pub fn share_of(max_idle: usize, worker: usize, workers: usize) -> usize {
        let workers = workers.max(1);
        max_idle / workers + usize::from(worker < max_idle % workers)
    }

    /// Endpoints this pool knows (ids `0..endpoints()`).
    pub fn endpoints(&self) -> usize {
        self.pools.len()
    }

    /// A reload: room for `endpoints` ids (the table only grows), each endpoint's share,
    /// the demand window. Idle connections stay.
    pub fn reconfigure(&mut self, endpoints: usize, share: usize, idle_timeout: Duration) {
        if self.pools.len() < endpoints {
            self.pools.resize_with(endpoints, EndpointPool::default);
        }
        for p in &mut self.pools {
            p.share = share;
        }
        self.window = idle_timeout;
    }

    /// The oldest idle connection of `endpoint`, for a client.
    pub fn take(&mut self, endpoint: usize) -> Option<IdleConn> {
        self.pools[endpoint].idle.pop_front()
    }

    pub fn put(&mut self, endpoint: usize, conn: IdleConn) {
        self.pools[endpoint].idle.push_back(conn);
    }

    pub fn idle(&self, endpoint: usize) -> usize {
        self.pools[endpoint].idle.len()
    }

    pub fn total_idle(&self) -> usize {
        self.pools.iter().map(|p| p.idle.len()).sum()
    }

    /// Pool dials in flight, all endpoints.
    pub fn total_dialing(&self) -> usize {
        self.pools.iter().map(|p| p.dialing).sum()
    }

    pub fn dial_started(&mut self, endpoint: usize) {
        self.pools[endpoint].dialing += 1;
    }

    pub fn dial_ended(&mut self, endpoint: usize) {
        let p = &mut self.pools[endpoint];
        p.dialing = p.dialing.saturating_sub(1);
    }

    /// A session wanted `endpoint` (from the pool or not): the refill target follows this.
    pub fn record_demand(&mut self, endpoint: usize) {
        self.pools[endpoint].demand_cur += 1;
    }

    /// Starts a new demand window when the current one is over.
    pub fn rotate(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= self.window {
            self.window_start = now;
            for p in &mut self.pools {
                p.demand_prev = std::mem::take(&mut p.demand_cur);
            }
        }
    }

    /// How many warm connections `endpoint` should have: the full share at startup, then
    /// as many as sessions wanted in the last window (at most the share), so an unused
    /// proxy lets its pool expire instead of reopening connections forever.
    pub fn target(&self, endpoint: usize, now: Instant) -> usize {
        let p = &self.pools[endpoint];
        if now < self.warm_until {
            p.share
        } else {
            p.share.min(p.demand_prev.max(p.demand_cur))
        }
    }

    /// A pool dial to `endpoint` failed: no refill before `until`.
    pub fn dial_failed(&mut self, endpoint: usize, until: Instant) {
        self.pools[endpoint].backoff_until = Some(until);
    }

    /// Dials needed to reach the target.
    pub fn deficit(&self, endpoint: usize, now: Instant) -> usize {
        let p = &self.pools[endpoint];
        if p.backoff_until.is_some_and(|t| now < t) {
            return 0;
        }
        self.target(endpoint, now)
            .saturating_sub(p.idle.len() + p.dialing)
    }

    /// Removes the idle connections older than `max_age`, oldest first.
    pub fn expire(
        &mut self,
        endpoint: usize,
        now: Instant,
        max_age: Duration,
        out: &mut Vec<RawFd>,
    ) {
        let idle = &mut self.pools[endpoint].idle;
        while let Some(c) = idle.front() {
            if now.duration_since(c.since) < max_age {
                break;
            }
            out.push(c.fd);
            idle.pop_front();
        }
    }

    /// Keeps the idle connections `alive` accepts; the others' fds go to `out`.
    pub fn retain(
        &mut self,
        endpoint: usize,
        mut alive: impl FnMut(RawFd) -> bool,
        out: &mut Vec<RawFd>,
    ) {
        self.pools[endpoint].idle.retain(|c| {
            let keep = alive(c.fd);
            if !keep {
                out.push(c.fd);
            }
            keep
        });
    }

    /// Empties an endpoint's idle pool if its down epoch moved since last time.
    pub fn flush_if_went_down(
        &mut self,
        endpoint: usize,
        down_epoch: u64,
        out: &mut Vec<RawFd>,
    ) -> bool {
        let p = &mut self.pools[endpoint];
        if p.seen_down_epoch == down_epoch {
            return false;
        }
        p.seen_down_epoch = down_epoch;
        out.extend(p.idle.drain(..).map(|c| c.fd));
        true
    }

    /// Every idle fd (shutdown).
    pub fn drain_all(&mut self, out: &mut Vec<RawFd>) {
        for p in &mut self.pools {
            out.extend(p.idle.drain(..).map(|c| c.fd));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_max_idle() {
        let now = Instant::now();
        let t = Duration::from_secs(60);
        for (max_idle, workers) in [(5, 2), (1, 2), (100, 3), (7, 1)] {
            let total: usize = (0..workers)
                .map(|w| WarmPool::new(1, w, workers, max_idle, t, now).target(0, now))
                .sum();
            assert_eq!(
                total, max_idle,
                "max_idle {max_idle} over {workers} workers"
            );
        }
    }

    #[test]
    fn target_follows_demand_after_the_first_window() {
        let start = Instant::now();
        let t = Duration::from_secs(10);
        let mut p = WarmPool::new(1, 0, 1, 8, t, start);
        assert_eq!(p.deficit(0, start), 8, "warm from startup");
        p.dial_started(0);
        assert_eq!(p.deficit(0, start), 7);
        let later = start + t;
        p.rotate(later);
        assert_eq!(p.target(0, later), 0, "no demand: no refill");
        p.record_demand(0);
        p.record_demand(0);
        assert_eq!(p.target(0, later), 2);
        p.rotate(later + t);
        assert_eq!(
            p.target(0, later + t),
            2,
            "the previous window still counts"
        );
        p.rotate(later + t + t);
        assert_eq!(p.target(0, later + t + t), 0);
        let mut q = WarmPool::new(1, 0, 1, 8, t, start);
        q.dial_failed(0, start + Duration::from_secs(1));
        assert_eq!(q.deficit(0, start), 0, "backing off after a failed dial");
        assert_eq!(q.deficit(0, start + Duration::from_secs(1)), 8);
    }

    #[test]
    fn expire_takes_the_oldest_and_flush_follows_the_epoch() {
        let start = Instant::now();
        let t = Duration::from_secs(10);
        let mut p = WarmPool::new(1, 0, 1, 8, t, start);
        for (fd, age) in [(3, 0), (4, 5), (5, 9)] {
            p.put(
                0,
                IdleConn {
                    fd,
                    since: start + Duration::from_secs(age),
                },
            );
        }
        let mut out = Vec::new();
        p.expire(0, start + Duration::from_secs(15), t, &mut out);
        assert_eq!(out, [3, 4]);
        assert_eq!(p.take(0).map(|c| c.fd), Some(5));
        p.put(
            0,
            IdleConn {
                fd: 6,
                since: start,
            },
        );
        out.clear();
        assert!(!p.flush_if_went_down(0, 0, &mut out));
        assert!(p.flush_if_went_down(0, 1, &mut out));
        assert_eq!(out, [6]);
        assert_eq!(p.idle(0), 0);
    }
}
