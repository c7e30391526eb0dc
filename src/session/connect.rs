//! A session's upstream side: pairing an admitted client with a warm connection or a
//! dial, the dials themselves (clients' and the pool's refills) and their completions.

use std::os::fd::{AsRawFd, IntoRawFd};
use std::sync::atomic::Ordering;

use super::{submit, Close, Context, EndpointId, Half, ListenerId, Next, SessionId, State, Submit};
use crate::deadline;
use crate::driver::{sys, Driver};
use crate::metrics::WorkerCounters;
use crate::upstream::{self, Discard, EndpointTable};

impl<D: Driver> Context<D> {
    /// Pairs an admitted client with an upstream: a warm connection of the picked
    /// endpoint if one is alive, else a dial.
    pub(super) fn connect_client(&mut self, id: SessionId) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        let (listener, tried) = (s.listener.index(), s.tried);
        let l = &mut self.listeners[listener];
        let Some(ep) = upstream::pick(
            &self.shared.endpoints,
            &l.endpoints,
            self.settings.balance,
            &mut l.next,
            tried,
            false,
        ) else {
            return self.retry_later(id);
        };
        let ep = EndpointId::new(ep);
        if let Some(s) = self.table.get_mut(id) {
            s.endpoint = ep;
        }
        if self.settings.pool_enabled {
            let pool = &self.shared.pool;
            // The session's demand counts once, however many dead ones are skipped.
            let mut first = true;
            while let Some(conn) = pool.take(ep.index(), self.now, std::mem::take(&mut first)) {
                // The keeper's watch may not have reported a close yet: a FIN or RST
                // behind a queued greeting must not reach the client.
                if !sys::tcp_established(conn.fd.as_raw_fd()) {
                    pool.count_discard(Discard::DeadAtHandoff, 1);
                    upstream::close_unused(conn.fd);
                    continue;
                }
                self.counters.pool_hits += 1;
                if let Some(s) = self.table.get_mut(id) {
                    s.upstream_fd = conn.fd.into_raw_fd();
                }
                self.activate(id);
                // Replace it now, not on the next tick: a steady stream of clients
                // would drain the pool between ticks.
                return self.refill_endpoint(ep);
            }
            self.counters.pool_misses += 1;
        }
        self.dial(id, ep);
        self.refill_endpoint(ep);
    }

    /// Starts a dial of endpoint `ep` for entry `id` (a client's or the pool's).
    pub(super) fn dial(&mut self, id: SessionId, ep: EndpointId) {
        let addr = self.endpoint_addr(ep);
        let sock = match sys::stream_socket(&addr) {
            Ok(fd) => fd,
            Err(e) => {
                if let Some(held_back) = self.log_limits.upstream_socket.hit() {
                    tracing::warn!(upstream = %addr, held_back, "internal: cannot create an upstream socket: {e}");
                }
                count_connect_error(&mut self.counters, &self.shared.endpoints, ep);
                return self.begin_close(id, Close::Fin);
            }
        };
        let fd = sock.as_raw_fd();
        let _ = sys::set_nodelay(fd);
        if let Err(e) = sys::set_upstream_keepalive(fd) {
            tracing::debug!(upstream = %addr, "upstream: cannot set keepalive: {e}");
        }
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        s.upstream_fd = sock.into_raw_fd();
        s.endpoint = ep;
        s.last_active = self.now_ms;
        if s.state != State::PoolDial {
            s.state = State::Connecting;
        }
        submit(
            &mut self.driver,
            s,
            id,
            Submit::Connect { fd, endpoint: ep },
        );
    }

    /// The session relays from now on.
    pub(super) fn activate(&mut self, id: SessionId) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        s.state = State::Active;
        s.counted = true;
        s.started_ms = self.now_ms as u32;
        let ep = s.endpoint.index();
        if let Some(c) = self.endpoint_counters.get_mut(ep) {
            c.sessions += 1;
        }
        let client_fd = s.client_fd;
        let listener = s.listener.index();
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
        if let Some(s) = self.table.get_mut(id) {
            s.remote[Half::ClientToUpstream.index()] = upstream_remote;
            s.remote[Half::UpstreamToClient.index()] = client_remote;
        }
        self.table.touch(id.key(), self.now_ms);
        for half in Half::BOTH {
            self.arm_recv(id, half);
        }
    }

    /// A dial completed: the session relays, the pool dial joins the pool, or the next
    /// attempt starts; what it returns is for a dial that gave up.
    pub(super) fn on_connect(&mut self, id: SessionId, res: i32) -> Next {
        let Some(s) = self.table.get_mut(id) else {
            return Next::Continue;
        };
        let state = s.state;
        if state != State::Connecting && state != State::PoolDial {
            return Next::Continue;
        }
        let ep = s.endpoint;
        let health = self.settings.health_enabled;
        if res >= 0 {
            self.histograms
                .connect_ms
                .record(self.now_ms.saturating_sub(s.last_active));
            if health {
                self.shared.endpoints.observe(ep.index(), true);
            }
            if state == State::PoolDial {
                s.state = State::PoolReady;
            } else {
                self.activate(id);
            }
            return Next::Continue;
        }
        let addr = self.shared.endpoints.get(ep.index()).addr;
        if res == -libc::ECANCELED {
            self.counters.upstream_connect_timeouts += 1;
            tracing::debug!(upstream = %addr, "upstream: connect timed out");
        } else {
            tracing::debug!(upstream = %addr, "upstream: connect failed: {}", std::io::Error::from_raw_os_error(-res));
        }
        count_connect_error(&mut self.counters, &self.shared.endpoints, ep);
        if health
            && self.shared.endpoints.observe(ep.index(), false) == upstream::Transition::WentDown
        {
            tracing::warn!(upstream = %addr, "upstream: dials keep failing, endpoint marked down");
            self.shared.wake_all();
        }
        let fd = std::mem::replace(&mut s.upstream_fd, -1);
        self.driver.release_fd(fd, true);
        sys::close(fd, false);
        if state == State::PoolDial {
            // The reservation is over; finalize must not end it a second time.
            s.endpoint = EndpointId::NONE;
            self.pool_dialing -= 1;
            self.shared.pool.dial_failed(
                ep.index(),
                deadline::after(self.now, self.settings.retry_interval),
            );
            return Next::Close(Close::Fin);
        }
        // A client's dial: another healthy endpoint at once, the same one after
        // retry_interval, at most max_retries more attempts in all.
        // Bit = the endpoint's position in its listener's list; positions past 64 are
        // not marked (they may be tried again in the round, bounded by max_retries),
        // so no endpoint is ever wrongly excluded.
        if let Some(pos) = self.listeners[s.listener.index()]
            .endpoints
            .iter()
            .position(|&e| e == ep.index())
            .filter(|&p| p < 64)
        {
            s.tried |= 1u64 << pos;
        }
        if u32::from(s.retries) >= self.settings.max_retries.min(u32::from(u16::MAX)) {
            self.counters.connection_failures += 1;
            tracing::debug!(upstream = %addr, retries = s.retries, "upstream: giving up on the client after its retries");
            return Next::Close(Close::Fin);
        }
        s.retries = s.retries.saturating_add(1);
        self.counters.connect_retries += 1;
        let (listener, tried) = (s.listener.index(), s.tried);
        let l = &mut self.listeners[listener];
        match upstream::pick(
            &self.shared.endpoints,
            &l.endpoints,
            self.settings.balance,
            &mut l.next,
            tried,
            true,
        ) {
            Some(next) => self.dial(id, EndpointId::new(next)),
            None => self.retry_later(id),
        }
        Next::Continue
    }

    /// Every healthy endpoint failed this round: try again after `retry_interval`.
    pub(super) fn retry_later(&mut self, id: SessionId) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        s.state = State::RetryWait;
        s.tried = 0;
        submit(&mut self.driver, s, id, Submit::RetryTimer);
    }

    /// Dials healthy endpoints up to their pool targets.
    pub fn refill(&mut self) {
        // The endpoints this worker knows: a reload may have grown the table meanwhile.
        for ep in 0..self.driver.endpoints() {
            self.refill_endpoint(EndpointId::new(ep));
        }
    }

    /// Dials `ep` up to its pool target (the reservation is shared by every worker, so
    /// workers never dial the same deficit twice).
    pub(super) fn refill_endpoint(&mut self, ep: EndpointId) {
        if !self.settings.pool_enabled
            || self.stopping
            || self.listeners_closed
            || !self.shared.endpoints.is_up(ep.index())
        {
            return;
        }
        let n = self
            .shared
            .pool
            .reserve_dials(ep.index(), self.now, upstream::MAX_POOL_DIALS);
        for _ in 0..n {
            let Some(id) = self
                .table
                .insert(-1, ListenerId(0), State::PoolDial, self.now_ms)
            else {
                self.shared.pool.dial_ended(ep.index());
                continue;
            };
            if let Some(s) = self.table.get_mut(id) {
                s.endpoint = ep;
            }
            self.pool_dialing += 1;
            self.counters.pool_dials += 1;
            self.dial(id, ep);
        }
    }
}

/// A dial attempt to `ep` failed: counted in the worker's total and the endpoint's (a
/// free function: the session being dialed is borrowed from the table meanwhile).
fn count_connect_error(counters: &mut WorkerCounters, endpoints: &EndpointTable, ep: EndpointId) {
    counters.upstream_connect_errors += 1;
    endpoints
        .get(ep.index())
        .connect_errors
        .fetch_add(1, Ordering::Relaxed);
}
