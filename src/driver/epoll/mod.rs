//! The epoll driver: io_uring's completions emulated on readiness (as monoio's legacy
//! driver does), so the worker runs unchanged where io_uring is refused.
//!
//! An op is recorded against its fd and tried with a non-blocking syscall on the next
//! [`Driver::submit_and_wait`]; what would block waits for an edge of the fd's
//! edge-triggered interest (`EPOLLIN | EPOLLOUT | EPOLLRDHUP`, registered once per fd).
//! Because every new op is tried before waiting, an edge that came while no op was
//! pending is never needed; the one exception is a receive on an fd whose last receive
//! drained it (a short read or `EAGAIN`): it waits for the next `EPOLLIN` edge, which
//! every arrival of data raises, instead of a receive bound to fail. A receive takes a
//! free slot only for the call that finds data (else it gives it straight back), so an
//! idle session holds no buffer here either. Timers (connect timeouts, retry waits, the
//! tick) live in a heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::buffer::{BufferRegistry, Pending, SlotQueue};
use crate::driver::sys::{self, RawSockAddr};
use crate::driver::{Completion, Driver, Entered, SendOp};

mod attempt;
mod calls;
#[cfg(test)]
mod tests;

/// Accepts taken from one listener per readiness before others get a turn.
const ACCEPT_BATCH: usize = 64;
/// Events taken per wait.
const EVENTS: usize = 1024;
/// Room the driver's queues and timer tables keep once a burst is over: a burst of
/// thousands of clients would otherwise leave its high-water mark resident, as if each
/// idle session cost it.
const KEPT: usize = 1024;

/// What waits on the reading side of an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ReadOp {
    #[default]
    None,
    Accept,
    Recv,
    /// A receive that completes with `-EAGAIN` rather than wait.
    Probe,
    /// An eventfd read.
    Wake,
}

/// What waits on the writing side of an fd, in a table by fd while it waits: idle fds
/// pay nothing for it, and the table gives its room back after a burst of dials.
enum WriteOp {
    Send {
        user_data: u64,
        what: Outgoing,
    },
    Connect {
        user_data: u64,
        timeout_user_data: u64,
        timer: u64,
        endpoint: usize,
        /// `connect(2)` returned EINPROGRESS: writability now means it finished.
        started: bool,
    },
}

/// What a send sends: the iovecs are made when it is tried, from slots the sending
/// half holds until the send completes.
#[derive(Clone, Copy)]
enum Outgoing {
    One(Pending),
    /// The first parts (up to [`crate::driver::MAX_IOV`]) of the queue as it was when the send was
    /// submitted; later slots join its tail and are not part of this send.
    Queue(SlotQueue),
}

/// The ops pending on one fd (indexed by fd number: 24 bytes per fd).
#[derive(Default)]
struct FdOps {
    /// `user_data` of the read-side op (0: none; the worker never submits 0).
    read: u64,
    /// `user_data` of the hang-up watch (0: none).
    hup: u64,
    read_op: ReadOp,
    /// A write-side op waits in `Epoll::writes`.
    writing: bool,
    /// Registered with the epoll set.
    watched: bool,
    /// The last receive took all there was: the next waits for an `EPOLLIN` edge.
    drained: bool,
    /// The peer shut down or the socket failed (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`
    /// seen): its edge is spent, and a short read may stop at a FIN still queued, so
    /// receives are always tried from now on.
    ended: bool,
    /// In `to_try`, with which sides new.
    fresh: u8,
}

const FRESH_READ: u8 = 1;
const FRESH_WRITE: u8 = 2;
const FRESH_HUP: u8 = 4;

impl FdOps {
    fn is_idle(&self) -> bool {
        self.read == 0 && self.hup == 0 && !self.writing
    }
}

enum TimerKind {
    Once,
    /// Re-armed every `tick` until cancelled.
    Tick,
    /// The connect timeout of the connect pending on this fd.
    ConnectTimeout(RawFd),
}

struct Timer {
    user_data: u64,
    kind: TimerKind,
}

pub(crate) struct Epoll {
    epfd: OwnedFd,
    buffers: BufferRegistry,
    endpoints: Vec<RawSockAddr>,
    connect_timeout: Duration,
    retry_interval: Duration,
    tick: Duration,
    fds: Vec<FdOps>,
    writes: HashMap<RawFd, WriteOp>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: HashMap<u64, Timer>,
    /// Timer ids by `user_data`, for `cancel_op`.
    timer_ids: HashMap<u64, u64>,
    next_timer: u64,
    to_try: Vec<RawFd>,
    trying: Vec<RawFd>,
    events: Vec<libc::epoll_event>,
    ready: Vec<Completion>,
    in_flight: usize,
}

impl Epoll {
    pub fn new(
        buffers: BufferRegistry,
        endpoints: &[SocketAddr],
        connect_timeout: Duration,
        retry_interval: Duration,
        tick: Duration,
    ) -> io::Result<Epoll> {
        Ok(Epoll {
            epfd: sys::epoll()?,
            buffers,
            endpoints: endpoints.iter().map(|a| RawSockAddr::new(*a)).collect(),
            connect_timeout,
            retry_interval,
            tick,
            fds: Vec::new(),
            writes: HashMap::new(),
            deadlines: BinaryHeap::new(),
            timers: HashMap::new(),
            timer_ids: HashMap::new(),
            next_timer: 0,
            to_try: Vec::new(),
            trying: Vec::new(),
            events: Vec::with_capacity(EVENTS),
            ready: Vec::new(),
            in_flight: 0,
        })
    }

    fn fd(&mut self, fd: RawFd) -> &mut FdOps {
        let i = fd as usize;
        if i >= self.fds.len() {
            self.fds.resize_with(i + 1, FdOps::default);
        }
        &mut self.fds[i]
    }

    /// Records a new op on `fd`'s `side`, to be tried on the next wait.
    fn fresh(&mut self, fd: RawFd, side: u8) {
        let f = self.fd(fd);
        let queued = f.fresh != 0;
        f.fresh |= side;
        if !queued {
            self.to_try.push(fd);
        }
    }

    fn complete(&mut self, user_data: u64, res: i32, more: bool, buffer: Option<u16>) {
        self.ready.push(Completion {
            user_data,
            res,
            more,
            notif: false,
            buffer,
        });
    }

    fn add_timer(&mut self, after: Duration, user_data: u64, kind: TimerKind) -> u64 {
        let id = self.next_timer;
        self.next_timer += 1;
        self.deadlines
            .push(Reverse((crate::deadline::after(Instant::now(), after), id)));
        self.timers.insert(id, Timer { user_data, kind });
        self.timer_ids.insert(user_data, id);
        id
    }

    fn remove_timer(&mut self, id: u64) -> Option<Timer> {
        let t = self.timers.remove(&id)?;
        if self.timer_ids.get(&t.user_data) == Some(&id) {
            self.timer_ids.remove(&t.user_data);
        }
        Some(t)
    }

    /// Records the write-side op of `fd`.
    fn start_write(&mut self, fd: RawFd, op: WriteOp) {
        let f = self.fd(fd);
        debug_assert!(!f.writing, "two write-side ops on fd {fd}");
        f.writing = true;
        self.writes.insert(fd, op);
        self.fresh(fd, FRESH_WRITE);
    }
}

impl Driver for Epoll {
    fn buffers(&self) -> &BufferRegistry {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut BufferRegistry {
        &mut self.buffers
    }

    fn accept(&mut self, fd: RawFd, user_data: u64) {
        self.in_flight += 1;
        let f = self.fd(fd);
        debug_assert_eq!(f.read, 0, "two read-side ops on fd {fd}");
        (f.read, f.read_op) = (user_data, ReadOp::Accept);
        self.fresh(fd, FRESH_READ);
    }

    fn recv(&mut self, fd: RawFd, dont_wait: bool, user_data: u64) {
        self.in_flight += 1;
        let f = self.fd(fd);
        debug_assert_eq!(f.read, 0, "two read-side ops on fd {fd}");
        f.read = user_data;
        f.read_op = if dont_wait {
            ReadOp::Probe
        } else {
            ReadOp::Recv
        };
        // A drained fd (watched since its last receive) has nothing until an edge says
        // so: a try now would only cost an EAGAIN.
        if dont_wait || !f.drained {
            self.fresh(fd, FRESH_READ);
        }
    }

    fn send(&mut self, fd: RawFd, _op: SendOp, part: Pending, user_data: u64) {
        self.in_flight += 1;
        let what = Outgoing::One(part);
        self.start_write(fd, WriteOp::Send { user_data, what });
    }

    fn send_queue(&mut self, fd: RawFd, queue: &SlotQueue, user_data: &dyn Fn(u16) -> u64) {
        self.in_flight += 1;
        let (user_data, what) = (user_data(0), Outgoing::Queue(*queue));
        self.start_write(fd, WriteOp::Send { user_data, what });
    }

    fn release_msg(&mut self, _id: u16) {}

    fn connect(&mut self, fd: RawFd, endpoint: usize, user_data: u64, timeout_user_data: u64) {
        self.in_flight += 2;
        let timer = self.add_timer(
            self.connect_timeout,
            timeout_user_data,
            TimerKind::ConnectTimeout(fd),
        );
        let op = WriteOp::Connect {
            user_data,
            timeout_user_data,
            timer,
            endpoint,
            started: false,
        };
        self.start_write(fd, op);
    }

    fn cancel_fd(&mut self, fd: RawFd, user_data: u64) {
        self.in_flight += 1;
        let n = self.cancel_fd_ops(fd, -libc::ECANCELED);
        self.complete(user_data, cancel_result(n), false, None);
    }

    fn cancel_op(&mut self, target: u64, user_data: u64) {
        self.in_flight += 1;
        let mut found = false;
        if let Some(id) = self.timer_ids.get(&target).copied() {
            if let Some(t) = self.remove_timer(id) {
                found = true;
                match t.kind {
                    TimerKind::ConnectTimeout(fd) => self.finish_write(fd, -libc::ECANCELED, false),
                    _ => self.complete(target, -libc::ECANCELED, false, None),
                }
            }
        }
        if !found {
            // Not a timer: an fd's op (rare; the worker cancels timers by id).
            let writing = self.writes.iter().find_map(|(&fd, op)| match op {
                WriteOp::Send { user_data, .. } | WriteOp::Connect { user_data, .. }
                    if *user_data == target =>
                {
                    Some(fd as usize)
                }
                _ => None,
            });
            let fd = writing.or_else(|| {
                self.fds
                    .iter()
                    .position(|f| f.read == target || f.hup == target)
            });
            if let Some(fd) = fd {
                let fd = fd as RawFd;
                found = true;
                if self.fd(fd).read == target {
                    self.finish_read(fd, -libc::ECANCELED, None);
                } else if self.fd(fd).hup == target {
                    self.finish_hup(fd, -libc::ECANCELED);
                } else {
                    self.finish_write(fd, -libc::ECANCELED, false);
                }
            }
        }
        let res = if found { 0 } else { -libc::ENOENT };
        self.complete(user_data, res, false, None);
    }

    fn cancel_all(&mut self, user_data: u64) {
        self.in_flight += 1;
        let mut n = 0;
        for fd in 0..self.fds.len() {
            if !self.fds[fd].is_idle() {
                n += self.cancel_fd_ops(fd as RawFd, -libc::ECANCELED);
            }
        }
        let ids: Vec<u64> = self.timers.keys().copied().collect();
        for id in ids {
            if let Some(t) = self.remove_timer(id) {
                n += 1;
                self.complete(t.user_data, -libc::ECANCELED, false, None);
            }
        }
        self.complete(user_data, cancel_result(n), false, None);
    }

    fn retry_timer(&mut self, user_data: u64) {
        self.in_flight += 1;
        self.add_timer(self.retry_interval, user_data, TimerKind::Once);
    }

    fn tick(&mut self, user_data: u64, one_shot: bool) {
        self.in_flight += 1;
        let kind = if one_shot {
            TimerKind::Once
        } else {
            TimerKind::Tick
        };
        self.add_timer(self.tick, user_data, kind);
    }

    fn watch_hangup(&mut self, fd: RawFd, user_data: u64) {
        self.in_flight += 1;
        let f = self.fd(fd);
        debug_assert_eq!(f.hup, 0, "two hang-up watches on fd {fd}");
        f.hup = user_data;
        self.fresh(fd, FRESH_HUP);
    }

    fn wait_wake(&mut self, eventfd: RawFd, user_data: u64) {
        self.in_flight += 1;
        if !self.fd(eventfd).watched {
            // Read only when readable: a blocking read would stall the worker.
            if let Err(e) = calls::set_nonblocking(eventfd) {
                return self.complete(user_data, -e, false, None);
            }
        }
        let f = self.fd(eventfd);
        (f.read, f.read_op) = (user_data, ReadOp::Wake);
        self.fresh(eventfd, FRESH_READ);
    }

    fn release_fd(&mut self, fd: RawFd, closing: bool) {
        let epfd = self.epfd.as_raw_fd();
        let f = std::mem::take(self.fd(fd));
        debug_assert!(f.is_idle(), "fd {fd} released with an op pending");
        if f.watched && !closing {
            // It lives on elsewhere (the warm pool): no edge of it may reach this set.
            let _ = calls::unwatch(epfd, fd);
        }
    }

    fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    fn add_endpoint(&mut self, addr: SocketAddr) {
        self.endpoints.push(RawSockAddr::new(addr));
    }

    fn set_dial_timeouts(&mut self, connect_timeout: Duration, retry_interval: Duration) {
        self.connect_timeout = connect_timeout;
        self.retry_interval = retry_interval;
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn submit_and_wait(&mut self) -> io::Result<Entered> {
        std::mem::swap(&mut self.to_try, &mut self.trying);
        for i in 0..self.trying.len() {
            let fd = self.trying[i];
            let sides = std::mem::take(&mut self.fd(fd).fresh);
            self.try_fd(fd, sides);
        }
        self.trying.clear();
        let timeout = if self.ready.is_empty() && self.to_try.is_empty() {
            self.wait_ms(Instant::now())
        } else {
            0
        };
        match calls::wait(self.epfd.as_raw_fd(), &mut self.events, timeout) {
            Ok(_) => {}
            Err(libc::EINTR) => return Ok(Entered::Retry),
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
        for i in 0..self.events.len() {
            let ev = self.events[i];
            let (fd, bits) = (ev.u64 as RawFd, ev.events as i32);
            let Some(f) = self.fds.get_mut(fd as usize) else {
                continue;
            };
            let failed = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            let readable = failed || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0;
            if readable {
                // Even with no receive pending: the next one must try.
                f.drained = false;
            }
            if failed || bits & libc::EPOLLRDHUP != 0 {
                f.ended = true;
            }
            if f.is_idle() {
                continue;
            }
            let mut sides = 0;
            if readable {
                sides |= FRESH_READ | FRESH_HUP;
            }
            if failed || bits & libc::EPOLLOUT != 0 {
                sides |= FRESH_WRITE;
            }
            self.try_fd(fd, sides);
        }
        self.fire_timers(Instant::now());
        self.shrink_after_burst();
        Ok(Entered::Ok)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        for c in self.ready.drain(..) {
            if !c.more {
                self.in_flight -= 1;
            }
            out.push(c);
        }
        if self.ready.capacity() > KEPT {
            self.ready.shrink_to(KEPT);
        }
    }
}

impl Epoll {
    /// Gives back what a burst grew: room in the queues once they are empty, and in the
    /// timer tables once they are a quarter full.
    fn shrink_after_burst(&mut self) {
        if self.to_try.is_empty() && self.to_try.capacity() > KEPT {
            self.to_try.shrink_to(KEPT);
        }
        if self.trying.capacity() > KEPT {
            self.trying.shrink_to(KEPT);
        }
        let writes = self.writes.len();
        if self.writes.capacity() > KEPT && writes * 4 < self.writes.capacity() {
            self.writes.shrink_to(KEPT.max(writes * 2));
        }
        let timers = self.timers.len();
        if self.timers.capacity() > KEPT && timers * 4 < self.timers.capacity() {
            self.timers.shrink_to(KEPT.max(timers * 2));
            self.timer_ids.shrink_to(KEPT.max(timers * 2));
        }
        // Cancelled timers stay in the heap until their deadline: size it by its own length.
        let pending = self.deadlines.len();
        if self.deadlines.capacity() > KEPT && pending * 4 < self.deadlines.capacity() {
            self.deadlines.shrink_to(KEPT.max(pending * 2));
        }
    }
}

/// What a cancel op completes with: how many it cancelled, or `-ENOENT`.
fn cancel_result(n: usize) -> i32 {
    if n == 0 {
        -libc::ENOENT
    } else {
        n as i32
    }
}
