//! Admission of a new client: a `max_active` slot now, a place in the queue, or a
//! refusal; and the grants that later hand queued clients a slot.

use std::os::fd::RawFd;

use super::{Context, ListenerId, State};
use crate::admission::{Admit, Ticket};
use crate::deadline;
use crate::driver::{sys, Driver};

impl<D: Driver> Context<D> {
    /// A new client: it gets a `max_active` slot now, or waits in the queue.
    pub fn accept_client(&mut self, listener: ListenerId, client_fd: RawFd) {
        let _ = sys::set_nodelay(client_fd);
        let Some(id) = self
            .table
            .insert(client_fd, listener, State::Queued, self.now_ms)
        else {
            tracing::warn!("internal: connection table full; closing the new client");
            sys::close(client_fd, false);
            return;
        };
        self.counters.sessions_total += 1;
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Ok(peer) = sys::peer_addr(client_fd) {
                self.debug_peers.insert(id.key(), peer);
            }
        }
        let ticket = Ticket {
            worker: self.index,
            key: id.key(),
            gen: id.gen,
            since: self.now,
        };
        match self.shared.admission.admit(ticket, &mut self.woken) {
            Admit::Now => {
                if let Some(s) = self.table.get_mut(id) {
                    s.permit = true;
                }
                self.connect_client(id);
            }
            Admit::Queued => {
                self.counters.queued_total += 1;
                self.queued.push_back(id);
            }
            Admit::Rejected => {
                self.counters.queue_rejected += 1;
                let peer = self.debug_peers.remove(&id.key());
                tracing::debug!(client = ?peer, "client: admission queue full; closing the new client");
                self.table.remove(id.key());
                sys::close(client_fd, false);
            }
        }
        self.wake_granted();
    }

    /// Serves the grants admission made to this worker.
    pub fn take_grants(&mut self) {
        let mut grants = Vec::new();
        self.shared.admission.take_grants(self.index, &mut grants);
        for t in grants {
            self.on_grant(t);
        }
    }

    /// A queued client got a slot.
    fn on_grant(&mut self, t: Ticket) {
        let id = super::SessionId::new(t.key, t.gen);
        match self.table.get_mut(id) {
            Some(s) if s.state == State::Queued => {
                s.permit = true;
                let waited = deadline::millis(self.now.saturating_duration_since(t.since));
                self.counters.queue_wait_ms = self.counters.queue_wait_ms.saturating_add(waited);
                self.histograms.queue_wait_ms.record(waited);
                self.connect_client(id);
            }
            // The client went away (or timed out) after the grant was made.
            _ => {
                self.shared.admission.release(&mut self.woken);
                self.wake_granted();
            }
        }
    }
}
