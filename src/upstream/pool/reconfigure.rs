//! A reload's changes to the warm pool: endpoint shares, timers, and the endpoints whose
//! idle connections leave.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{share, Discard, EndpointPool, WarmPool};
use crate::driver::sys;

/// What a reload changes in the pool (see [`WarmPool::reconfigure`]).
#[derive(Debug)]
pub struct Reconfigure<'a> {
    /// Endpoint ids the table holds now.
    pub endpoints: usize,
    /// The endpoints that get a share of `max_idle`, in id order.
    pub serving: &'a [usize],
    /// New or revived endpoints: their target is their full share for `idle_timeout`.
    pub warm: &'a [usize],
    /// Endpoints whose idle connections leave the pool, with their down epoch now.
    pub flush: &'a [(usize, u64)],
    /// 0 when the pool is off.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub retry_interval: Duration,
}

impl WarmPool {
    /// A reload, applied once for the whole proxy under the pool's lock while the keeper
    /// and the workers go on: room for `endpoints` ids (the table only grows), `max_idle`
    /// spread evenly over the endpoints in `serving` (new or revived ones warm at once,
    /// the others keep their idle connections and their demand), a share of 0 for every
    /// other endpoint, and the new timers. The idle connections of each `(id, down_epoch)`
    /// in `flush` (endpoints a reload retired, or all when it turned the pool off) leave
    /// the pool, counted as [`Discard::Flushed`], and a pool dial to it that connects
    /// later is refused; they are returned, for [`close_unused`] outside the lock.
    pub fn reconfigure(&self, r: &Reconfigure<'_>, now: Instant) -> Vec<OwnedFd> {
        let mut fds = Vec::new();
        {
            let mut st = self.lock();
            st.idle_timeout = r.idle_timeout;
            st.retry_interval = r.retry_interval;
            if st.endpoints.len() < r.endpoints {
                st.endpoints.resize_with(r.endpoints, EndpointPool::default);
            }
            let n = r.serving.len().max(1);
            for p in &mut st.endpoints {
                p.share = 0;
            }
            for (i, &ep) in r.serving.iter().enumerate() {
                if let Some(p) = st.endpoints.get_mut(ep) {
                    p.share = share(r.max_idle, n, i);
                }
            }
            for &ep in r.warm {
                if let Some(p) = st.endpoints.get_mut(ep) {
                    p.warm_until = Some(crate::deadline::after(now, r.idle_timeout));
                    // A revived endpoint starts afresh: no backoff from before.
                    p.backoff_until = None;
                }
            }
            for &(ep, epoch) in r.flush {
                if let Some(p) = st.endpoints.get_mut(ep) {
                    p.seen_down_epoch = epoch;
                    fds.extend(p.idle.drain(..).map(|e| e.fd));
                }
            }
        }
        self.discarded[Discard::Flushed as usize].fetch_add(fds.len() as u64, Relaxed);
        for fd in &fds {
            // Out of the keeper's watch before the caller closes it.
            let _ = sys::epoll_unwatch(self.epoll.as_raw_fd(), fd.as_raw_fd());
        }
        // The keeper recomputes its deadlines with the new timers.
        self.wake_keeper();
        fds
    }
}
