//! Teardown of entries (sessions and pool dials), and the periodic sweep of inactive
//! sessions, stalled peers and expired queue waits.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::{submit, Close, Context, EndpointId, Half, Session, SessionId, State, Submit};
use crate::deadline;
use crate::driver::{sys, Driver};
use crate::upstream;

impl<D: Driver> Context<D> {
    /// Starts tearing an entry down: cancels its ops; it is freed when the last completes.
    /// A [`Close::Reset`] sticks: a later orderly close of the same entry stays a reset.
    pub fn begin_close(&mut self, id: SessionId, how: Close) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        if how == Close::Reset {
            s.close = Close::Reset;
        }
        if s.state == State::Draining {
            return;
        }
        let prev = std::mem::replace(&mut s.state, State::Draining);
        let fds = [s.client_fd, s.upstream_fd];
        let pending = s.ops > 0;
        if prev == State::Queued {
            // Not found: the grant is on its way and will be given back (on_grant).
            self.shared.admission.withdraw(self.index, id.key(), id.gen);
        }
        if prev == State::RetryWait {
            if let Some(s) = self.table.get_mut(id) {
                submit(&mut self.driver, s, id, Submit::CancelRetryTimer);
            }
        }
        if pending {
            for fd in fds.into_iter().filter(|fd| *fd >= 0) {
                if let Some(s) = self.table.get_mut(id) {
                    submit(&mut self.driver, s, id, Submit::CancelFd(fd));
                }
            }
        }
        self.table.unlink(id.key());
        self.forget_waiter(id);
        self.settle(id);
    }

    /// Takes a closing session's parked directions off the wait list, so the list holds
    /// only live sessions however many come and go while the pool is exhausted.
    fn forget_waiter(&mut self, id: SessionId) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        if !s.dirs.iter().any(|d| d.parked()) {
            return;
        }
        for d in &mut s.dirs {
            d.set_parked(false);
        }
        self.waiters.retain(|&(w, _)| w != id);
        self.waiters_empty.retain(|&(w, _)| w != id);
    }

    /// After an op of entry `id` completed or it started closing: free a drained entry,
    /// or move a connected pool dial into the pool, once no op of it is in flight.
    pub fn settle(&mut self, id: SessionId) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        if s.ops > 0 {
            return;
        }
        match s.state {
            State::Draining => self.finalize(id.key()),
            State::PoolReady => {
                let s = self.table.remove(id.key());
                let ep = s.endpoint.index();
                self.pool_dialing -= 1;
                // The entry owned the fd and none of its ops is in flight (ops == 0):
                // from here the pool owns it.
                self.driver.release_fd(s.upstream_fd, false);
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
    pub(super) fn finalize(&mut self, key: usize) {
        let mut s = self.table.remove(key);
        let mut recycled = 0;
        for d in &mut s.dirs {
            recycled += self.driver.buffers_mut().clear(&mut d.queue);
        }
        if recycled > 0 {
            self.serve_waiters();
        }
        let ep = s.endpoint.index();
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
        if s.client_fd < 0 && s.endpoint != EndpointId::NONE {
            self.pool_dialing -= 1;
            self.shared.pool.dial_ended(ep);
        }
        if s.permit {
            self.shared.admission.release(&mut self.woken);
        }
        if s.flushing && s.close == Close::Fin {
            // Unread input would turn the close into an RST that discards what the
            // surviving peer's socket still has to deliver.
            for fd in [s.client_fd, s.upstream_fd] {
                if fd >= 0 {
                    sys::discard_unread(fd);
                }
            }
        }
        for fd in [s.client_fd, s.upstream_fd] {
            if fd >= 0 {
                self.driver.release_fd(fd, true);
                sys::close(fd, s.close == Close::Reset);
            }
        }
        self.wake_granted();
    }

    /// The one debug line per session close.
    fn log_close(&self, client: SocketAddr, s: &Session) {
        // A session that never relayed (queue timeout, failed dials) has no upstream.
        let (upstream, lived_ms) = if s.counted {
            let addr = self.endpoint_addr(s.endpoint);
            let lived = (self.now_ms as u32).wrapping_sub(s.started_ms);
            (addr.to_string(), lived)
        } else {
            ("none".to_string(), 0)
        };
        tracing::debug!(%client, %upstream, lived_ms, reset = s.close == Close::Reset, "session closed");
    }

    /// Closes inactive sessions and clients that waited past the queue timeout (the
    /// pool keeper looks after idle pooled connections).
    pub fn sweep(&mut self) {
        if let Some(timeout) = self.settings.session_idle_timeout {
            let idle_ms = deadline::millis(timeout);
            while let Some((id, last)) = self.table.oldest_active() {
                if last.saturating_add(idle_ms) > self.now_ms {
                    break;
                }
                self.counters.session_timeouts += 1;
                tracing::debug!("client: session closed after {timeout:?} without traffic");
                self.begin_close(id, Close::Fin);
            }
        }

        self.sweep_stalled();

        let queue_ms = deadline::millis(self.settings.queue_timeout);
        while let Some(&id) = self.queued.front() {
            let Some(s) = self.table.get_mut(id) else {
                self.queued.pop_front();
                continue;
            };
            if s.state != State::Queued {
                self.queued.pop_front();
                continue;
            }
            if s.last_active.saturating_add(queue_ms) > self.now_ms {
                break;
            }
            self.queued.pop_front();
            self.counters.queue_timeouts += 1;
            tracing::debug!(
                "client: closed after waiting {:?} for admission",
                self.settings.queue_timeout
            );
            self.begin_close(id, Close::Fin);
        }
    }

    /// Closes sessions with a direction whose destination has taken no byte for
    /// `session.send_timeout` while data waited for it: the slots it holds come back.
    /// Walks only directions that held slots since the last sweep (`holding`), so its
    /// cost is bounded by the pool and the sessions that came and went, not by the
    /// number of sessions. The close is a reset: the peer that does not read would
    /// otherwise keep the unsent bytes in the kernel.
    fn sweep_stalled(&mut self) {
        let Some(timeout) = self.settings.send_timeout else {
            // Turned off by a reload: forget the list (flags are cleared as we go).
            for (id, half) in std::mem::take(&mut self.holding) {
                if let Some(s) = self.table.get_mut(id) {
                    s.dir_mut(half).set_listed(false);
                }
            }
            return;
        };
        let limit = deadline::millis(timeout);
        let now = self.now_ms as u32;
        let mut i = 0;
        while i < self.holding.len() {
            let (id, half) = self.holding[i];
            let Some(s) = self.table.get_mut(id) else {
                self.holding.swap_remove(i);
                continue;
            };
            let active = s.state == State::Active;
            let d = s.dir_mut(half);
            if !active || d.queue.is_empty() {
                d.set_listed(false);
                self.holding.swap_remove(i);
                continue;
            }
            if u64::from(now.wrapping_sub(d.waiting_since)) < limit {
                i += 1;
                continue;
            }
            d.set_listed(false);
            self.holding.swap_remove(i);
            self.counters.send_timeouts += 1;
            let side = if half == Half::ClientToUpstream {
                "upstream"
            } else {
                "client"
            };
            tracing::debug!(
                "{side}: took no byte for {timeout:?} while data waited; session closed"
            );
            self.begin_close(id, Close::Reset);
        }
        // A burst (thousands of sessions receiving at once) leaves a large list behind:
        // give its room back, or it stays resident as if each idle session cost it.
        if self.holding.capacity() > 4 * self.holding.len().max(64) {
            self.holding.shrink_to(self.holding.len().max(64));
        }
    }
}
