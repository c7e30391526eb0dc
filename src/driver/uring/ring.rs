//! `Ring`: one worker's io_uring together with every piece of memory its ops point at
//! (buffer registry, timespecs, socket addresses, the wake counter), so nothing an op
//! references can be dropped before the ring itself.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::squeue::{Entry, Flags};
use io_uring::types::{CancelBuilder, Fd, TimeoutFlags, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use crate::buffer::{BufferRegistry, Pending, SlotQueue, BUFFER_GROUP};
use crate::driver::sys::RawSockAddr;
use crate::driver::{classify_enter_error, Completion, Driver, Entered, SendOp, MAX_IOV};

/// The `msghdr` and iovecs of one vectored send, at a fixed heap address while in flight.
struct MsgBuf {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// Says once per process why slots run unregistered (every worker would say the same).
fn warn_unregistered(why: &crate::buffer::Unregistered) {
    use crate::buffer::{Unregistered, MAX_FIXED};
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    match why {
        Unregistered::TooMany(count) => tracing::warn!(
            "{count} buffer slots per worker exceed the {MAX_FIXED} fixed buffers io_uring can \
             register; sending with plain send"
        ),
        Unregistered::Refused { bytes, error } => tracing::warn!(
            "cannot register {bytes} bytes of buffers with io_uring ({error}); the \
             locked-memory limit (RLIMIT_MEMLOCK) is {}. Running with unregistered buffers \
             and plain sends. Fix: raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, Docker \
             `--ulimit memlock=-1`) or grant CAP_IPC_LOCK",
            crate::driver::select::Memlock::current()
        ),
    }
}

/// Backlog entries whose room is kept once the backlog has drained.
const BACKLOG_KEPT: usize = 64;

/// One worker's ring. Field order matters: the ring is dropped first, so the kernel lets
/// go of every op before the memory those ops point at is unmapped or freed.
pub(crate) struct Ring {
    ring: IoUring,
    buffers: BufferRegistry,
    /// Boxed, so that growing the Vec (a reload adds endpoints) never moves an address a
    /// connect op points at.
    #[allow(clippy::vec_box)]
    endpoints: Vec<Box<RawSockAddr>>,
    connect_timeout: Box<Timespec>,
    retry_interval: Box<Timespec>,
    /// What the two timespecs above hold, so a reload that keeps them retires nothing.
    dial_timeouts: (Duration, Duration),
    /// Timespecs replaced by a reload: a queued op may still point at one, so they live
    /// as long as the ring (a few bytes per reload).
    #[allow(clippy::vec_box)]
    retired_timespecs: Vec<Box<Timespec>>,
    tick: Box<Timespec>,
    wake_counter: Box<u64>,
    /// Boxed: the Vec grows while sends point into earlier messages.
    #[allow(clippy::vec_box)]
    msgs: Vec<Box<MsgBuf>>,
    free_msgs: Vec<u16>,
    /// Entries waiting for room in the submission queue, oldest first, in groups that
    /// must enter the queue together (a connect and its linked timeout). While it is not
    /// empty every new entry joins its back, so ops keep their order.
    backlog: VecDeque<Backlogged>,
    /// Submitted ops whose final completion has not been reaped.
    in_flight: usize,
    tick_one_shot: bool,
}

/// One entry, or a linked pair that must stay adjacent in the submission queue.
enum Backlogged {
    One(Entry),
    Linked(Entry, Entry),
}

impl Backlogged {
    fn len(&self) -> usize {
        match self {
            Backlogged::One(_) => 1,
            Backlogged::Linked(..) => 2,
        }
    }
}

fn timespec(d: Duration) -> Box<Timespec> {
    Box::new(Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()))
}

impl Ring {
    pub fn new(
        ring: IoUring,
        buffers: BufferRegistry,
        endpoints: &[SocketAddr],
        connect_timeout: Duration,
        retry_interval: Duration,
        tick: Duration,
    ) -> Ring {
        Ring {
            ring,
            buffers,
            endpoints: endpoints
                .iter()
                .map(|a| Box::new(RawSockAddr::new(*a)))
                .collect(),
            connect_timeout: timespec(connect_timeout),
            retry_interval: timespec(retry_interval),
            dial_timeouts: (connect_timeout, retry_interval),
            retired_timespecs: Vec::new(),
            tick: timespec(tick),
            wake_counter: Box::new(0),
            msgs: Vec::new(),
            free_msgs: Vec::new(),
            backlog: VecDeque::new(),
            in_flight: 0,
            tick_one_shot: false,
        }
    }

    /// Registers the buffer registry's slots and provided ring with this ring.
    pub fn register_buffers(
        &mut self,
        fixed: bool,
        ring_entries: usize,
    ) -> io::Result<crate::buffer::Registration> {
        let refused = self
            .buffers
            .register(&self.ring.submitter(), fixed, ring_entries)?;
        if let Some(why) = refused {
            warn_unregistered(&why);
        }
        Ok(self.buffers.registration())
    }

    /// Queues one entry; when the submission queue is full it waits in the backlog.
    fn push(&mut self, entry: Entry) {
        self.in_flight += 1;
        self.enqueue(Backlogged::One(entry));
    }

    /// Queues `group` behind whatever waits, then moves what fits into the submission
    /// queue. Never blocks and never submits: the loop's next `submit_and_wait` does,
    /// and reaps completions meanwhile, so a kernel that refuses submissions (EBUSY
    /// while completions are pending) cannot make this spin.
    fn enqueue(&mut self, group: Backlogged) {
        // The common case, straight into the queue; the backlog keeps the order only
        // once something waits in it.
        if self.backlog.is_empty() && self.try_push(&group) {
            return;
        }
        self.backlog.push_back(group);
        self.flush_backlog();
    }

    /// Pushes a whole group into the submission queue if it has room for all of it.
    fn try_push(&mut self, group: &Backlogged) -> bool {
        let mut sq = self.ring.submission();
        if sq.capacity() - sq.len() < group.len() {
            return false;
        }
        // SAFETY: every entry built by this type points only at memory owned by
        // `self` (registry slots, boxed timespecs and addresses, the wake counter, boxed
        // messages), all of which outlive the ring because of the field order above.
        // Room for the whole group was checked, so a pair stays adjacent.
        let pushed = unsafe {
            match group {
                Backlogged::One(e) => sq.push(e),
                Backlogged::Linked(a, b) => sq.push_multiple(&[a.clone(), b.clone()]),
            }
        };
        pushed.is_ok()
    }

    /// Moves backlogged groups into the submission queue while whole groups fit.
    fn flush_backlog(&mut self) {
        while let Some(group) = self.backlog.pop_front() {
            if !self.try_push(&group) {
                self.backlog.push_front(group);
                return;
            }
        }
    }

    /// Entries waiting for room in the submission queue.
    #[cfg(test)]
    pub fn backlogged(&self) -> usize {
        self.backlog.iter().map(Backlogged::len).sum()
    }
}

impl Driver for Ring {
    fn buffers(&self) -> &BufferRegistry {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut BufferRegistry {
        &mut self.buffers
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Nothing to do: an io_uring op names its fd itself, and none is in flight.
    fn release_fd(&mut self, _fd: RawFd, _closing: bool) {}

    /// Endpoint addresses known to this ring (ids `0..endpoints()`).
    fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// A reload added an endpoint: it gets the next id.
    fn add_endpoint(&mut self, addr: SocketAddr) {
        self.endpoints.push(Box::new(RawSockAddr::new(addr)));
    }

    /// A reload changed the dial timeouts; ops already queued keep the old values.
    fn set_dial_timeouts(&mut self, connect_timeout: Duration, retry_interval: Duration) {
        if self.dial_timeouts == (connect_timeout, retry_interval) {
            return;
        }
        self.dial_timeouts = (connect_timeout, retry_interval);
        let old = std::mem::replace(&mut self.connect_timeout, timespec(connect_timeout));
        self.retired_timespecs.push(old);
        let old = std::mem::replace(&mut self.retry_interval, timespec(retry_interval));
        self.retired_timespecs.push(old);
    }

    /// Multishot accept on a listening socket.
    fn accept(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// A receive that takes a slot from the provided ring only when data arrives. With
    /// `dont_wait` it completes at once with `-EAGAIN` when nothing is queued.
    fn recv(&mut self, fd: RawFd, dont_wait: bool, user_data: u64) {
        let flags = if dont_wait { libc::MSG_DONTWAIT } else { 0 };
        let e = opcode::Recv::new(
            Fd(fd),
            std::ptr::null_mut(),
            self.buffers.slot_size() as u32,
        )
        .buf_group(BUFFER_GROUP)
        .flags(flags)
        .build()
        .flags(Flags::BUFFER_SELECT)
        .user_data(user_data);
        self.push(e);
    }

    /// Sends `len` bytes of `slot` from `offset`.
    fn send(&mut self, fd: RawFd, op: SendOp, part: Pending, user_data: u64) {
        let (slot, len) = (part.slot(), part.len());
        let ptr = self.buffers.ptr(part);
        let e = match op {
            SendOp::Send => opcode::Send::new(Fd(fd), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            SendOp::WriteFixed => opcode::WriteFixed::new(Fd(fd), ptr.cast_mut(), len as u32, slot)
                .offset(u64::MAX)
                .build(),
            SendOp::ZeroCopy => {
                let fixed = matches!(
                    self.buffers.registration(),
                    crate::buffer::Registration::Registered
                );
                opcode::SendZc::new(Fd(fd), ptr, len as u32)
                    .buf_index(fixed.then_some(slot))
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
        };
        self.push(e.user_data(user_data));
    }

    /// Sends the unsent parts of a direction's queue (up to [`MAX_IOV`] slots) in one
    /// `sendmsg`; `token`'s slot field carries the message id, to hand back to
    /// [`Ring::release_msg`] when the op completes.
    fn send_queue(&mut self, fd: RawFd, queue: &SlotQueue, user_data: &dyn Fn(u16) -> u64) {
        let id = match self.free_msgs.pop() {
            Some(id) => id,
            None => {
                // SAFETY: msghdr and iovec are plain old data; all-zero is valid for both.
                self.msgs
                    .push(Box::new(unsafe { std::mem::zeroed::<MsgBuf>() }));
                (self.msgs.len() - 1) as u16
            }
        };
        let msg = &mut *self.msgs[id as usize];
        let mut n = 0;
        for (iov, p) in msg.iov.iter_mut().zip(self.buffers.pending(queue)) {
            *iov = libc::iovec {
                iov_base: self.buffers.ptr(p).cast_mut().cast(),
                iov_len: p.len(),
            };
            n += 1;
        }
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = n;
        let e = opcode::SendMsg::new(Fd(fd), &msg.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(user_data(id));
        self.push(e);
    }

    /// Frees a vectored send's message after its completion.
    fn release_msg(&mut self, id: u16) {
        self.free_msgs.push(id);
    }

    /// Connects `fd` to endpoint `endpoint`, failing with `ECANCELED` after the connect timeout.
    fn connect(&mut self, fd: RawFd, endpoint: usize, user_data: u64, timeout_user_data: u64) {
        let addr = &self.endpoints[endpoint];
        let e = opcode::Connect::new(Fd(fd), addr.as_ptr(), addr.socklen())
            .build()
            .flags(Flags::IO_LINK)
            .user_data(user_data);
        let t = opcode::LinkTimeout::new(&*self.connect_timeout)
            .build()
            .user_data(timeout_user_data);
        // The pair enters the queue together or not at all: a connect submitted without
        // its timeout would carry IO_LINK onto whatever came next, and the timeout alone
        // would fail with EINVAL.
        self.in_flight += 2;
        self.enqueue(Backlogged::Linked(e, t));
    }

    /// Cancels every op on `fd`.
    fn cancel_fd(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Fires once after `retry_interval`.
    fn retry_timer(&mut self, user_data: u64) {
        let e = opcode::Timeout::new(&*self.retry_interval)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Cancels the op submitted with `target`.
    fn cancel_op(&mut self, target: u64, user_data: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Cancels every op in the ring (shutdown).
    fn cancel_all(&mut self, user_data: u64) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::any().all())
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// A timer firing every tick: a multishot timeout, or with `one_shot` (once the
    /// kernel refused multishot) a single expiry to re-arm each time.
    fn tick(&mut self, user_data: u64, one_shot: bool) {
        self.tick_one_shot |= one_shot;
        let flags = if self.tick_one_shot {
            TimeoutFlags::empty()
        } else {
            TimeoutFlags::MULTISHOT
        };
        let e = opcode::Timeout::new(&*self.tick)
            .flags(flags)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Completes when `fd` is reset or hung up (`POLLERR`/`POLLHUP`, always reported) or
    /// its peer shut down its side (`POLLRDHUP`): no buffer is needed to notice it.
    fn watch_hangup(&mut self, fd: RawFd, user_data: u64) {
        let e = opcode::PollAdd::new(Fd(fd), libc::POLLRDHUP as u32)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Reads the wake eventfd (another thread asks this worker to look at its flags).
    fn wait_wake(&mut self, eventfd: RawFd, user_data: u64) {
        let ptr: *mut u64 = &mut *self.wake_counter;
        let e = opcode::Read::new(Fd(eventfd), ptr.cast(), 8)
            .build()
            .user_data(user_data);
        self.push(e);
    }

    /// Submits what is queued (and what waited in the backlog, as room frees) and waits
    /// for at least one completion. Errors the loop survives are `Ok` with what they
    /// mean; only a broken ring is an error.
    fn submit_and_wait(&mut self) -> io::Result<Entered> {
        loop {
            self.flush_backlog();
            if self.backlog.is_empty() {
                // A burst (thousands of clients in one batch) can leave a large backlog
                // behind: give it back, or it stays resident as if each idle session
                // cost it.
                if self.backlog.capacity() > BACKLOG_KEPT {
                    self.backlog.shrink_to(BACKLOG_KEPT);
                }
                break;
            }
            // The queue is full and more waits: submit without waiting, then refill.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) => match classify_enter_error(&e) {
                    Entered::Fatal => return Err(e),
                    other => return Ok(other),
                },
            }
            if !self.ring.completion().is_empty() {
                // Let the caller reap before it submits more.
                return Ok(Entered::Ok);
            }
        }
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(Entered::Ok),
            Err(e) => match classify_enter_error(&e) {
                Entered::Fatal => Err(e),
                other => Ok(other),
            },
        }
    }

    /// Moves the available completions into `out` as (user_data, result, flags).
    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        for cqe in self.ring.completion() {
            let flags = cqe.flags();
            if !cqueue::more(flags) {
                self.in_flight -= 1;
            }
            out.push(Completion {
                user_data: cqe.user_data(),
                res: cqe.result(),
                more: cqueue::more(flags),
                notif: cqueue::notif(flags),
                buffer: cqueue::buffer_select(flags),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: u64 = 10;
    const CONNECT_TIMEOUT: u64 = 11;

    fn small_ring(entries: u32) -> Ring {
        let ring = IoUring::builder().build(entries).expect("io_uring");
        let buffers = BufferRegistry::new(1, 4096).expect("registry");
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        Ring::new(
            ring,
            buffers,
            &[refused],
            Duration::from_secs(5),
            Duration::from_millis(5),
            Duration::from_millis(100),
        )
    }

    /// A connect pushed into a nearly full queue keeps its linked timeout: the timeout
    /// completes as cancelled by its connect, never with EINVAL for being unlinked.
    #[test]
    fn a_connect_keeps_its_timeout_when_the_queue_is_nearly_full() {
        let mut ring = small_ring(4);
        for i in 0..3 {
            ring.retry_timer(1 + i);
        }
        let sock = crate::driver::sys::stream_socket(&"127.0.0.1:1".parse().expect("addr"))
            .expect("socket");
        use std::os::fd::AsRawFd;
        ring.connect(sock.as_raw_fd(), 0, CONNECT, CONNECT_TIMEOUT);
        assert_eq!(ring.backlogged(), 2, "the pair waits whole");
        let mut cqes = Vec::new();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ring.in_flight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "ops never completed: {seen:?}"
            );
            ring.submit_and_wait().expect("enter");
            ring.reap(&mut cqes);
            for c in &cqes {
                seen.push((c.user_data, c.res));
            }
        }
        let timeout = seen
            .iter()
            .find(|(op, _)| *op == CONNECT_TIMEOUT)
            .map(|(_, res)| *res);
        assert_eq!(timeout, Some(-libc::ECANCELED), "{seen:?}");
        let connect = seen.iter().find(|(op, _)| *op == CONNECT).map(|(_, r)| *r);
        assert_eq!(connect, Some(-libc::ECONNREFUSED), "{seen:?}");
    }

    #[test]
    fn a_dropped_completion_is_not_fatal() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            classify_enter_error(&e(libc::EBADR)),
            Entered::DroppedCompletion
        );
        assert_eq!(classify_enter_error(&e(libc::EBUSY)), Entered::Retry);
        assert_eq!(classify_enter_error(&e(libc::EINTR)), Entered::Retry);
        assert_eq!(classify_enter_error(&e(libc::EBADF)), Entered::Fatal);
    }
}
