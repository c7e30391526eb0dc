//! The epoll driver's attempts: each op tried with its non-blocking syscall (when new,
//! or when an edge says its side may be ready), and how an op finishes, exactly as
//! io_uring would complete it.

use std::cmp::Reverse;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::calls::{self, Sys};
use super::{
    Epoll, Outgoing, ReadOp, TimerKind, WriteOp, ACCEPT_BATCH, FRESH_HUP, FRESH_READ, FRESH_WRITE,
};
use crate::driver::{sys, MAX_IOV};

impl Epoll {
    /// The read-side op of `fd` ends with `res`.
    pub(super) fn finish_read(&mut self, fd: RawFd, res: i32, buffer: Option<u16>) {
        let f = self.fd(fd);
        let user_data = std::mem::take(&mut f.read);
        f.read_op = ReadOp::None;
        self.complete(user_data, res, false, buffer);
    }

    pub(super) fn finish_hup(&mut self, fd: RawFd, res: i32) {
        let user_data = std::mem::take(&mut self.fd(fd).hup);
        self.complete(user_data, res, false, None);
    }

    /// The write-side op of `fd` ends with `res`; a connect's timeout is cancelled, or
    /// (`timed_out`) reports that it fired.
    pub(super) fn finish_write(&mut self, fd: RawFd, res: i32, timed_out: bool) {
        let Some(op) = self.writes.remove(&fd) else {
            return;
        };
        self.fd(fd).writing = false;
        match op {
            WriteOp::Send { user_data, .. } => self.complete(user_data, res, false, None),
            WriteOp::Connect {
                user_data,
                timeout_user_data,
                timer,
                ..
            } => {
                self.remove_timer(timer);
                self.complete(user_data, res, false, None);
                let t = if timed_out {
                    -libc::ETIME
                } else {
                    -libc::ECANCELED
                };
                self.complete(timeout_user_data, t, false, None);
            }
        }
    }

    /// Tries the ops of `fd` on the sides given.
    pub(super) fn try_fd(&mut self, fd: RawFd, sides: u8) {
        if !self.fd(fd).watched {
            match calls::watch(self.epfd.as_raw_fd(), fd) {
                Ok(_) => self.fd(fd).watched = true,
                Err(libc::EEXIST) => self.fd(fd).watched = true,
                Err(e) => {
                    self.cancel_fd_ops(fd, -e);
                    return;
                }
            }
        }
        if sides & FRESH_READ != 0 {
            self.try_read(fd);
        }
        if sides & FRESH_WRITE != 0 {
            self.try_write(fd);
        }
        if sides & FRESH_HUP != 0 {
            self.try_hup(fd);
        }
    }

    pub(super) fn try_read(&mut self, fd: RawFd) {
        let f = self.fd(fd);
        let (user_data, op) = (f.read, f.read_op);
        match op {
            ReadOp::None => {}
            ReadOp::Accept => {
                for _ in 0..ACCEPT_BATCH {
                    match calls::accept(fd) {
                        Ok(client) => self.complete(user_data, client as i32, true, None),
                        Err(libc::EAGAIN) => return,
                        Err(e) => return self.finish_read(fd, -e, None),
                    }
                }
                // More may wait; no new edge will say so.
                self.fresh(fd, FRESH_READ);
            }
            ReadOp::Recv | ReadOp::Probe => {
                let probe = op == ReadOp::Probe;
                match self.buffers.pop_free() {
                    Some(slot) => {
                        let len = self.buffers.slot_size();
                        let buf = self.buffers.free_slot_ptr(slot);
                        match calls::recv(fd, buf, len) {
                            Ok(n) if n > 0 => {
                                // A short read took all there was (TCP hands over what is
                                // queued, up to the length asked), unless it stopped at a
                                // FIN whose edge has come and gone.
                                let f = self.fd(fd);
                                f.drained = n < len && !f.ended;
                                self.finish_read(fd, n as i32, Some(slot));
                            }
                            r => {
                                self.buffers.unpop(slot);
                                self.after_empty_read(fd, r, probe, 0);
                            }
                        }
                    }
                    // No free slot: io_uring fails the receive with ENOBUFS once data
                    // is there, and not before.
                    None => {
                        let r = calls::peek(fd);
                        self.after_empty_read(fd, r, probe, -libc::ENOBUFS);
                    }
                }
            }
            ReadOp::Wake => match calls::read_counter(fd) {
                Ok(n) => self.finish_read(fd, n as i32, None),
                Err(libc::EAGAIN) => {}
                Err(e) => self.finish_read(fd, -e, None),
            },
        }
    }

    /// A receive found no data it could keep: `r` is the call's outcome, `data_res`
    /// what data waiting means (`-ENOBUFS` after a peek).
    pub(super) fn after_empty_read(&mut self, fd: RawFd, r: Sys, probe: bool, data_res: i32) {
        match r {
            Ok(0) => self.finish_read(fd, 0, None),
            Ok(_) => self.finish_read(fd, data_res, None),
            Err(libc::EAGAIN) => {
                let f = self.fd(fd);
                f.drained = !f.ended;
                if probe {
                    self.finish_read(fd, -libc::EAGAIN, None);
                }
            }
            Err(e) => self.finish_read(fd, -e, None),
        }
    }

    pub(super) fn try_write(&mut self, fd: RawFd) {
        let Some(op) = self.writes.get_mut(&fd) else {
            return;
        };
        let outcome = match op {
            WriteOp::Send { what, .. } => {
                let mut iov = [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_IOV];
                let mut parts = 0;
                let mut add = |p| {
                    iov[parts] = libc::iovec {
                        iov_base: self.buffers.ptr(p).cast_mut().cast(),
                        iov_len: p.len(),
                    };
                    parts += 1;
                };
                match *what {
                    Outgoing::One(p) => add(p),
                    Outgoing::Queue(q) => {
                        for p in self.buffers.pending(&q).take(q.len().min(MAX_IOV)) {
                            add(p);
                        }
                    }
                }
                match calls::sendmsg(fd, &iov[..parts]) {
                    Ok(n) => Some(n as i32),
                    Err(libc::EAGAIN) => None,
                    Err(e) => Some(-e),
                }
            }
            WriteOp::Connect {
                started: started @ false,
                endpoint,
                ..
            } => match calls::connect(fd, &self.endpoints[*endpoint]) {
                Ok(_) => Some(0),
                Err(libc::EINPROGRESS) => {
                    *started = true;
                    None
                }
                Err(e) => Some(-e),
            },
            // Writable (or failed) after EINPROGRESS: SO_ERROR says how it ended.
            WriteOp::Connect { .. } => match sys::socket_error(fd) {
                Some(e) if e != 0 => Some(-e),
                _ if sys::peer_addr(fd).is_ok() => Some(0),
                _ => None,
            },
        };
        if let Some(res) = outcome {
            self.finish_write(fd, res, false);
        }
    }

    pub(super) fn try_hup(&mut self, fd: RawFd) {
        if self.fd(fd).hup == 0 {
            return;
        }
        let ev = calls::hangup_events(fd);
        if ev != 0 {
            self.finish_hup(fd, i32::from(ev));
        }
    }

    /// Ends every op on `fd` with `res`; returns how many there were.
    pub(super) fn cancel_fd_ops(&mut self, fd: RawFd, res: i32) -> usize {
        let mut n = 0;
        let f = self.fd(fd);
        if f.read != 0 {
            n += 1;
            self.finish_read(fd, res, None);
        }
        if self.fd(fd).hup != 0 {
            n += 1;
            self.finish_hup(fd, res);
        }
        if self.fd(fd).writing {
            n += 1;
            self.finish_write(fd, res, false);
        }
        n
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(t) = self.remove_timer(id) else {
                continue; // cancelled
            };
            match t.kind {
                TimerKind::Once => self.complete(t.user_data, -libc::ETIME, false, None),
                TimerKind::Tick => {
                    self.complete(t.user_data, -libc::ETIME, true, None);
                    self.add_timer(self.tick, t.user_data, TimerKind::Tick);
                }
                TimerKind::ConnectTimeout(fd) => {
                    self.finish_write(fd, -libc::ECANCELED, true);
                }
            }
        }
    }

    /// Milliseconds to the next timer (rounded up), or -1 for none.
    pub(super) fn wait_ms(&self, now: Instant) -> i32 {
        match self.deadlines.peek() {
            None => -1,
            Some(&Reverse((at, _))) => {
                let us = at.saturating_duration_since(now).as_micros();
                us.div_ceil(1000).min(i32::MAX as u128) as i32
            }
        }
    }
}
