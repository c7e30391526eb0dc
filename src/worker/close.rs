//! A worker's teardown of entries (sessions and pool dials) and its periodic sweep of
//! inactive sessions and expired queue waits.

use super::*;

impl<D: Driver> Worker<D> {
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
            self.driver.cancel_op(
                Token::new(key, gen, OpKind::RetryTimer).encode(),
                Token::new(key, gen, OpKind::Cancel).encode(),
            );
        }
        if pending {
            for fd in fds.into_iter().filter(|fd| *fd >= 0) {
                if let Some(s) = self.table.get_mut(key, gen) {
                    s.ops += 1;
                }
                self.driver
                    .cancel_fd(fd, Token::new(key, gen, OpKind::Cancel).encode());
            }
        }
        self.table.unlink(key);
        self.forget_waiter(key, gen);
        self.settle(key, gen);
    }

    /// Takes a closing session's parked directions off the wait list, so the list holds
    /// only live sessions however many come and go while the pool is exhausted.
    fn forget_waiter(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        if !s.dirs.iter().any(|d| d.parked()) {
            return;
        }
        for d in &mut s.dirs {
            d.set_parked(false);
        }
        self.waiters.retain(|&(k, g, _)| (k, g) != (key, gen));
        self.waiters_empty.retain(|&(k, g, _)| (k, g) != (key, gen));
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
        if s.flushing && !s.reset {
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
                sys::close(fd, s.reset);
            }
        }
        self.wake_granted();
    }

    /// The one debug line per session close.
    pub(super) fn log_close(&self, client: SocketAddr, s: &crate::conn::Session) {
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
    pub(super) fn sweep(&mut self) {
        if let Some(timeout) = self.settings.session_idle_timeout {
            let idle_ms = deadline::millis(timeout);
            while let Some((key, gen, last)) = self.table.oldest_active() {
                if last.saturating_add(idle_ms) > self.now_ms {
                    break;
                }
                self.counters.session_timeouts += 1;
                tracing::debug!("client: session closed after {timeout:?} without traffic");
                self.begin_close(key, gen, false);
            }
        }

        self.sweep_stalled();

        let queue_ms = deadline::millis(self.settings.queue_timeout);
        while let Some(&(key, gen)) = self.queued.front() {
            let Some(s) = self.table.get_mut(key, gen) else {
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
            self.begin_close(key, gen, false);
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
            for (key, gen, dir) in std::mem::take(&mut self.holding) {
                if let Some(s) = self.table.get_mut(key, gen) {
                    s.dirs[dir].set_listed(false);
                }
            }
            return;
        };
        let limit = deadline::millis(timeout);
        let now = self.now_ms as u32;
        let mut i = 0;
        while i < self.holding.len() {
            let (key, gen, dir) = self.holding[i];
            let Some(s) = self.table.get_mut(key, gen) else {
                self.holding.swap_remove(i);
                continue;
            };
            let active = s.state == State::Active;
            let d = &mut s.dirs[dir];
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
            let side = if dir == CLIENT_TO_UPSTREAM {
                "upstream"
            } else {
                "client"
            };
            tracing::debug!(
                "{side}: took no byte for {timeout:?} while data waited; session closed"
            );
            self.begin_close(key, gen, true);
        }
        // A burst (thousands of sessions receiving at once) leaves a large list behind:
        // give its room back, or it stays resident as if each idle session cost it.
        if self.holding.capacity() > 4 * self.holding.len().max(64) {
            self.holding.shrink_to(self.holding.len().max(64));
        }
    }
}
