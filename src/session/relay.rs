//! One session's two directions: receive into a slot, send from the same slot, pass a FIN
//! on after the data before it, cap the slots a direction holds (backpressure), park on
//! ENOBUFS. Each completion handler returns what should happen to the session next
//! ([`Next`]); the caller applies it once the handler is done with the session.

use super::{send_op, submit, Close, Context, Half, Next, Peer, SessionId, State, Submit};
use crate::buffer::{self, Registration};
use crate::driver::{sys, Completion, Driver, SendOp};

impl<D: Driver> Context<D> {
    /// Arms a receive on `half`'s source unless it is already armed, finished, parked, at
    /// its cap of held slots, or holds slots while the pool is down to its reserve.
    /// Returns whether it armed one.
    pub fn arm_recv(&mut self, id: SessionId, half: Half) -> bool {
        self.arm_recv_as(id, half, false)
    }

    /// Arms a receive; a `probe` completes at once with EAGAIN when nothing is queued.
    ///
    /// Fairness: a direction that already holds a slot may take another only while the
    /// free slots, less one per such receive already armed, exceed the reserve
    /// (`buffer::reserve`). The rest of the pool is only for directions that hold none,
    /// so stalled directions cannot take a slot another direction needs for its first.
    /// A direction refused here holds slots, so its send is in flight or about to be,
    /// and its completion arms the receive again.
    fn arm_recv_as(&mut self, id: SessionId, half: Half, probe: bool) -> bool {
        let cap = self.settings.max_in_flight;
        let b = self.driver.buffers();
        let free = b.count() - b.in_use();
        let above_reserve = free.saturating_sub(self.holder_armed) > buffer::reserve(b.count());
        let Some(s) = self.table.get_mut(id) else {
            return false;
        };
        let d = s.dir(half);
        let holding = !d.queue.is_empty();
        if s.state != State::Active
            || d.recv_armed()
            || d.eof()
            || d.parked()
            || d.dead()
            || d.queue.len() >= cap
            || (holding && !above_reserve)
        {
            return false;
        }
        let (src, _) = s.fds(half);
        let d = &mut s.dir_mut(half);
        d.set_recv_armed(true);
        d.set_probing(probe);
        d.set_armed_holding(holding);
        self.holder_armed += usize::from(holding);
        submit(
            &mut self.driver,
            s,
            id,
            Submit::Recv {
                half,
                fd: src,
                probe,
            },
        );
        true
    }

    /// A receive completed. A full slot means the source likely has more queued: while
    /// nothing is being sent and the cap allows, probe for it before sending, so a bulk
    /// stream goes out in vectored sends of up to `max_in_flight` slots (fewer, larger
    /// writes cost the kernel less per byte) while each receive still takes one slot.
    pub fn on_recv(&mut self, id: SessionId, half: Half, res: i32, slot: Option<u16>) -> Next {
        let size = self.driver.buffers().slot_size();
        let cap = self.settings.max_in_flight;
        let Some(s) = self.table.get_mut(id) else {
            self.drop_received(slot);
            return Next::Continue;
        };
        let probing = s.dir_mut(half).probing();
        s.dir_mut(half).set_probing(false);
        s.dir_mut(half).set_recv_armed(false);
        let armed_holding = s.dir_mut(half).armed_holding();
        s.dir_mut(half).set_armed_holding(false);
        if armed_holding {
            self.holder_armed -= 1;
        }
        if s.state != State::Active {
            self.drop_received(slot);
            return Next::Continue;
        }
        match (res, slot) {
            (n, Some(slot)) if n > 0 => {
                let d = &mut s.dir_mut(half);
                self.driver.buffers_mut().take(slot);
                let now_ms = self.now_ms;
                if d.queue.is_empty() {
                    // Data waits for the destination from now on (the send timeout).
                    d.waiting_since = now_ms as u32;
                    if self.settings.send_timeout.is_some() && !d.listed() {
                        d.set_listed(true);
                        self.holding.push((id, half));
                    }
                }
                self.driver
                    .buffers_mut()
                    .enqueue(&mut d.queue, slot, n as usize);
                let gather = n as usize == size && !d.sending() && d.queue.len() < cap;
                // Counted once, per endpoint; the totals are their sums, made at publish.
                if let Some(c) = self.endpoint_counters.get_mut(s.endpoint.index()) {
                    if half == Half::ClientToUpstream {
                        c.bytes_to += n as u64;
                    } else {
                        c.bytes_from += n as u64;
                    }
                }
                self.table.touch(id.key(), now_ms);
                // The probe may be refused (the reserve): then send what was gathered.
                if !(gather && self.arm_recv_as(id, half, true)) {
                    self.start_send(id, half);
                    self.arm_recv(id, half);
                }
                Next::Continue
            }
            (e, _) if probing && e == -libc::EAGAIN => {
                // Nothing more queued: send what was gathered, then wait for data.
                self.start_send(id, half);
                self.arm_recv(id, half);
                Next::Continue
            }
            (0, _) => {
                s.dir_mut(half).set_eof(true);
                self.drop_received(slot);
                self.start_send(id, half);
                self.pass_fin(id, half)
            }
            (e, _) if e == -libc::ENOBUFS => {
                s.dir_mut(half).set_parked(true);
                let empty_handed = s.dir_mut(half).queue.is_empty();
                if empty_handed && !s.dir_mut(half).hup_armed() {
                    // Parked with nothing held, it cannot receive the peer's reset:
                    // a poll that needs no buffer watches for it meanwhile.
                    s.dir_mut(half).set_hup_armed(true);
                    let (src, _) = s.fds(half);
                    submit(&mut self.driver, s, id, Submit::Hup { half, fd: src });
                }
                self.counters.buffer_waits += 1;
                if empty_handed {
                    self.waiters_empty.push_back((id, half));
                } else {
                    self.waiters.push_back((id, half));
                }
                // What was gathered goes out; slots may have come back meanwhile.
                self.start_send(id, half);
                self.serve_waiters();
                Next::Continue
            }
            (e, slot) => {
                self.drop_received(slot);
                if e == -libc::ECANCELED {
                    return Next::Continue;
                }
                self.count_peer_error(id, half.source(), e);
                self.peer_failed(id, half.source())
            }
        }
    }

    /// Sends what `half` holds unless a send is already in flight: sends of one half
    /// are serialised so a short send can never reorder bytes. Several held slots go out
    /// in one vectored send: fewer, larger writes cost the kernel less per byte.
    fn start_send(&mut self, id: SessionId, half: Half) {
        let Some(s) = self.table.get_mut(id) else {
            return;
        };
        let d = s.dir(half);
        if d.sending() || d.dead() || s.state != State::Active {
            return;
        }
        let queue = d.queue;
        let Some(front) = self.driver.buffers().pending(&queue).next() else {
            return;
        };
        let (_, dst) = s.fds(half);
        let remote = s.remote[half.index()];
        let registered = self.driver.buffers().registration() == Registration::Registered;
        let op = send_op(self.settings.send_mode, registered, remote, front.len());
        s.dir_mut(half).set_sending(true);
        let what = if queue.len() > 1 && op == SendOp::Send {
            Submit::SendQueue {
                half,
                fd: dst,
                queue: &queue,
            }
        } else {
            Submit::Send {
                half,
                fd: dst,
                op,
                part: front,
            }
        };
        submit(&mut self.driver, s, id, what);
    }

    pub fn on_send(&mut self, id: SessionId, half: Half, slot: u16, c: Completion) -> Next {
        let res = c.res;
        if c.notif {
            // The kernel is done with a zero-copy send's pages.
            self.release_slot(slot);
            return Next::Continue;
        }
        if c.more {
            // A zero-copy send: its notification will follow and holds the slot till then.
            self.driver.buffers_mut().retain(slot);
        }
        self.on_sent(id, half, res)
    }

    pub fn on_send_msg(&mut self, id: SessionId, half: Half, msg: u16, res: i32) -> Next {
        self.driver.release_msg(msg);
        self.on_sent(id, half, res)
    }

    /// A send of `half` completed with `res`: drop what went out, go on.
    fn on_sent(&mut self, id: SessionId, half: Half, res: i32) -> Next {
        let Some(s) = self.table.get_mut(id) else {
            return Next::Continue;
        };
        s.dir_mut(half).set_sending(false);
        if s.state != State::Active {
            return Next::Continue;
        }
        if s.dir_mut(half).dead() {
            // The destination failed while this send was in flight: now that the kernel
            // is done with the slots, drop them.
            if self.driver.buffers_mut().clear(&mut s.dir_mut(half).queue) > 0 {
                self.serve_waiters();
            }
            return Next::Continue;
        }
        if res <= 0 {
            if res == -libc::ECANCELED {
                return Next::Continue;
            }
            self.count_peer_error(id, half.destination(), res);
            return self.peer_failed(id, half.destination());
        }
        // The destination took bytes: the send timeout starts again.
        s.dir_mut(half).waiting_since = self.now_ms as u32;
        if self
            .driver
            .buffers_mut()
            .consume(&mut s.dir_mut(half).queue, res as usize)
            > 0
        {
            self.serve_waiters();
        }
        self.start_send(id, half);
        self.arm_recv(id, half);
        self.pass_fin(id, half)
    }

    /// Passes a FIN from `half`'s source to its destination once everything received
    /// before it is sent; the session closes when both directions are done.
    pub(super) fn pass_fin(&mut self, id: SessionId, half: Half) -> Next {
        let Some(s) = self.table.get_mut(id) else {
            return Next::Continue;
        };
        let d = s.dir(half);
        if !d.eof() || d.shut() || d.sending() || !d.queue.is_empty() {
            return Next::Continue;
        }
        let (_, dst) = s.fds(half);
        // ENOTCONN: the destination is already gone; its own direction reports that.
        let _ = sys::shutdown_write(dst);
        s.dir_mut(half).set_shut(true);
        if s.dirs.iter().all(|d| d.shut()) {
            Next::Close(Close::Fin)
        } else {
            Next::Continue
        }
    }

    /// One peer of a session failed (reset or error). What was queued for the *other*
    /// peer is still delivered, then that peer gets a FIN; what was queued for the failed
    /// peer is dropped, since nobody can receive it. When nothing is left for the other
    /// peer (neither in our slots nor unsent in its socket), the failure is passed on at
    /// once as a reset.
    pub fn peer_failed(&mut self, id: SessionId, failed: Peer) -> Next {
        // `to_dead` sends to the failed peer; `from_dead` receives from it.
        let (to_dead, from_dead) = (failed.inbound(), failed.outbound());
        let Some(s) = self.table.get_mut(id) else {
            return Next::Continue;
        };
        if s.state != State::Active || s.dir(to_dead).dead() {
            return Next::Continue;
        }
        let (_, survivor) = s.fds(from_dead);
        let d = s.dir(from_dead);
        let owed = !d.queue.is_empty() || d.sending() || sys::unsent_bytes(survivor) > 0;
        if !owed || d.shut() {
            return Next::Close(Close::Reset);
        }
        s.flushing = true;
        let dead = s.dir_mut(to_dead);
        dead.set_dead(true);
        dead.set_shut(true);
        if !dead.sending() && self.driver.buffers_mut().clear(&mut dead.queue) > 0 {
            self.serve_waiters();
        }
        if let Some(s) = self.table.get_mut(id) {
            // Nothing more comes from the failed peer: deliver the rest, then the FIN.
            s.dir_mut(from_dead).set_eof(true);
        }
        self.start_send(id, from_dead);
        self.pass_fin(id, from_dead)
    }

    /// A parked direction's source was reset or shut down. A reset (`POLLERR`) fails
    /// the source as a receive would; a shutdown with nothing unread before it is its
    /// EOF. With data before the FIN, the direction waits for a slot as before.
    pub fn on_hangup(&mut self, id: SessionId, half: Half, res: i32) -> Next {
        let Some(s) = self.table.get_mut(id) else {
            return Next::Continue;
        };
        s.dir_mut(half).set_hup_armed(false);
        if res < 0 || s.state != State::Active || !s.dir_mut(half).parked() {
            return Next::Continue;
        }
        let (src, _) = s.fds(half);
        let ev = res as i16;
        if ev & libc::POLLERR != 0 {
            let err = -sys::socket_error(src).unwrap_or(libc::ECONNRESET);
            self.count_peer_error(id, half.source(), err);
            self.peer_failed(id, half.source())
        } else if ev & (libc::POLLRDHUP | libc::POLLHUP) != 0 && sys::unread_bytes(src) == 0 {
            // POLLHUP alone is both sides shut down (our FIN passed, theirs came): an EOF.
            let d = &mut s.dir_mut(half);
            d.set_parked(false);
            d.set_eof(true);
            self.start_send(id, half);
            self.pass_fin(id, half)
        } else {
            Next::Continue
        }
    }

    /// Takes and at once hands back a slot a receive filled that no session can use.
    pub fn drop_received(&mut self, slot: Option<u16>) {
        if let Some(slot) = slot {
            self.driver.buffers_mut().take(slot);
            self.release_slot(slot);
        }
    }

    /// Hands a slot back; if it returned to the ring, a parked direction may go on.
    pub fn release_slot(&mut self, slot: u16) {
        if self.driver.buffers_mut().release(slot) {
            self.serve_waiters();
        }
    }

    /// Re-arms parked directions, oldest first, one per free slot.
    pub fn serve_waiters(&mut self) {
        let mut free = self.driver.buffers().count() - self.driver.buffers().in_use();
        while free > 0 {
            let Some((id, half)) = self
                .waiters_empty
                .pop_front()
                .or_else(|| self.waiters.pop_front())
            else {
                break;
            };
            let Some(s) = self.table.get_mut(id) else {
                continue;
            };
            if !s.dir_mut(half).parked() || s.state != State::Active {
                continue;
            }
            s.dir_mut(half).set_parked(false);
            // A direction that holds slots may be refused (the reserve); its own send
            // completion arms it again.
            if self.arm_recv(id, half) {
                free -= 1;
            }
        }
    }

    fn count_peer_error(&mut self, id: SessionId, peer: Peer, res: i32) {
        let client_side = peer == Peer::Client;
        if client_side {
            self.counters.client_errors += 1;
        } else {
            self.counters.upstream_errors += 1;
        }
        // Resets come in bursts when a peer dies: one line per second, with a count.
        let Some(held_back) = self.log_limits.peer_errors.hit() else {
            return;
        };
        let err = std::io::Error::from_raw_os_error(-res);
        let Some(s) = self.table.get(id.key()) else {
            return;
        };
        if client_side {
            // getpeername fails on a reset socket; with debug logging on, the address
            // taken at accept is kept.
            let peer = match self.debug_peers.get(&id.key()) {
                Some(a) => a.to_string(),
                None => sys::peer_addr(s.client_fd)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "unknown (enable debug logging to keep it)".into()),
            };
            tracing::warn!(client = %peer, held_back, "client: {err}");
        } else {
            let peer = self.endpoint_addr(s.endpoint);
            tracing::warn!(upstream = %peer, held_back, "upstream: {err}");
        }
    }
}
