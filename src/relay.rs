//! One session's two directions: receive into a slot, send from the same slot, pass a FIN
//! on after the data before it, cap the slots a direction holds (backpressure), park on
//! ENOBUFS, and tear down once every submitted op has completed.

use io_uring::cqueue;

use crate::conn::{Chunk, State, CLIENT_TO_UPSTREAM};
use crate::uring::{sys, OpKind, Token};
use crate::worker::Worker;

impl Worker {
    /// Arms a receive on `dir`'s source unless it is already armed, finished, parked or at
    /// its cap of held slots.
    pub(crate) fn arm_recv(&mut self, key: usize, gen: u32, dir: usize) {
        let cap = self.settings.max_in_flight;
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        let d = &s.dirs[dir];
        if s.state != State::Active || d.recv_armed || d.eof || d.parked || d.queue.len() >= cap {
            return;
        }
        let (src, _) = s.fds(dir);
        s.dirs[dir].recv_armed = true;
        s.ops += 1;
        self.ring
            .recv(src, Token::new(key, gen, OpKind::Recv).dir(dir));
    }

    pub(crate) fn on_recv(&mut self, key: usize, gen: u32, dir: usize, res: i32, flags: u32) {
        let slot = cqueue::buffer_select(flags);
        if let Some(slot) = slot {
            self.ring.buffers.take(slot);
        }
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.dirs[dir].recv_armed = false;
        if s.state != State::Active {
            if let Some(slot) = slot {
                self.release_slot(slot);
            }
            return;
        }
        match (res, slot) {
            (n, Some(slot)) if n > 0 => {
                s.dirs[dir].queue.push_back(Chunk {
                    slot,
                    offset: 0,
                    len: n as u32,
                });
                if dir == CLIENT_TO_UPSTREAM {
                    self.counters.bytes_client_to_upstream += n as u64;
                } else {
                    self.counters.bytes_upstream_to_client += n as u64;
                }
                self.start_send(key, gen, dir);
                self.arm_recv(key, gen, dir);
            }
            (0, _) => {
                s.dirs[dir].eof = true;
                if let Some(slot) = slot {
                    self.release_slot(slot);
                }
                self.pass_fin(key, gen, dir);
            }
            (e, _) if e == -libc::ENOBUFS => {
                s.dirs[dir].parked = true;
                self.counters.buffer_waits += 1;
                self.waiters.push_back((key, gen, dir));
                // Slots may have come back between the kernel's try and now.
                self.serve_waiters();
            }
            (e, slot) => {
                if let Some(slot) = slot {
                    self.release_slot(slot);
                }
                if e != -libc::ECANCELED {
                    self.count_peer_error(dir, true, e);
                    self.begin_close(key, gen, true);
                }
            }
        }
    }

    /// Sends the oldest held chunk of `dir` unless a send is already in flight: sends of
    /// one direction are serialised so a short send can never reorder bytes.
    fn start_send(&mut self, key: usize, gen: u32, dir: usize) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        let d = &s.dirs[dir];
        if d.sending || s.state != State::Active {
            return;
        }
        let Some(&chunk) = d.queue.front() else {
            return;
        };
        let (_, dst) = s.fds(dir);
        let remote = s.remote[dir];
        s.dirs[dir].sending = true;
        s.ops += 1;
        let op = self.send_op(remote, chunk.len as usize);
        self.ring.send(
            dst,
            op,
            chunk.slot,
            chunk.offset as usize,
            chunk.len as usize,
            Token::new(key, gen, OpKind::Send).dir(dir).slot(chunk.slot),
        );
    }

    pub(crate) fn on_send(
        &mut self,
        key: usize,
        gen: u32,
        dir: usize,
        slot: u16,
        res: i32,
        flags: u32,
    ) {
        if cqueue::notif(flags) {
            // The kernel is done with a zero-copy send's pages.
            self.release_slot(slot);
            return;
        }
        if cqueue::more(flags) {
            // A zero-copy send: its notification will follow and holds the slot till then.
            self.ring.buffers.retain(slot);
        }
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.dirs[dir].sending = false;
        if s.state != State::Active {
            return;
        }
        if res <= 0 {
            if res != -libc::ECANCELED {
                self.count_peer_error(dir, false, res);
                self.begin_close(key, gen, true);
            }
            return;
        }
        let d = &mut s.dirs[dir];
        let Some(front) = d.queue.front_mut() else {
            return;
        };
        let sent = res as u32;
        front.offset += sent;
        front.len = front.len.saturating_sub(sent);
        if front.len == 0 {
            let done = front.slot;
            d.queue.pop_front();
            self.release_slot(done);
        }
        self.start_send(key, gen, dir);
        self.arm_recv(key, gen, dir);
        self.pass_fin(key, gen, dir);
    }

    /// Passes a FIN from `dir`'s source to its destination once everything received
    /// before it is sent; closes the session when both directions are done.
    fn pass_fin(&mut self, key: usize, gen: u32, dir: usize) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        let d = &s.dirs[dir];
        if !d.eof || d.shut || d.sending || !d.queue.is_empty() {
            return;
        }
        let (_, dst) = s.fds(dir);
        // ENOTCONN: the destination is already gone; its own direction reports that.
        let _ = sys::shutdown_write(dst);
        s.dirs[dir].shut = true;
        if s.dirs.iter().all(|d| d.shut) {
            self.begin_close(key, gen, false);
        }
    }

    /// Hands a slot back; if it returned to the ring, a parked direction may go on.
    pub(crate) fn release_slot(&mut self, slot: u16) {
        if self.ring.buffers.release(slot) {
            self.serve_waiters();
        }
    }

    /// Re-arms parked directions, oldest first, one per free slot.
    fn serve_waiters(&mut self) {
        let mut free = self.ring.buffers.count() - self.ring.buffers.in_use();
        while free > 0 {
            let Some((key, gen, dir)) = self.waiters.pop_front() else {
                break;
            };
            let Some(s) = self.table.get_mut(key, gen) else {
                continue;
            };
            if !s.dirs[dir].parked {
                continue;
            }
            s.dirs[dir].parked = false;
            self.arm_recv(key, gen, dir);
            free -= 1;
        }
    }

    fn count_peer_error(&mut self, dir: usize, receiving: bool, res: i32) {
        // Receiving on direction 0, or sending on direction 1, talks to the client.
        let client_side = (dir == CLIENT_TO_UPSTREAM) == receiving;
        let err = std::io::Error::from_raw_os_error(-res);
        if client_side {
            self.counters.client_errors += 1;
            tracing::debug!("client: {err}");
        } else {
            self.counters.upstream_errors += 1;
            tracing::debug!("upstream: {err}");
        }
    }

    /// Starts tearing a session down: cancels its ops; it is freed when the last completes.
    pub(crate) fn begin_close(&mut self, key: usize, gen: u32, reset: bool) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        s.reset |= reset;
        if s.state == State::Draining {
            return;
        }
        s.state = State::Draining;
        if s.ops > 0 {
            let fds = [s.client_fd, s.upstream_fd];
            for fd in fds.into_iter().filter(|fd| *fd >= 0) {
                s.ops += 1;
                self.ring
                    .cancel_fd(fd, Token::new(key, gen, OpKind::Cancel));
            }
        }
    }

    /// Frees a draining session whose ops have all completed: its slots, its fds, its key.
    pub(crate) fn finish_if_drained(&mut self, key: usize, gen: u32) {
        let Some(s) = self.table.get_mut(key, gen) else {
            return;
        };
        if s.state != State::Draining || s.ops > 0 {
            return;
        }
        let s = self.table.remove(key);
        for d in &s.dirs {
            for chunk in &d.queue {
                self.release_slot(chunk.slot);
            }
        }
        sys::close(s.client_fd, s.reset);
        sys::close(s.upstream_fd, s.reset);
    }
}
