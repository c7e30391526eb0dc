//! `Ring`: one worker's io_uring together with every piece of memory its ops point at
//! (buffer registry, timespecs, socket addresses, the wake counter), so nothing an op
//! references can be dropped before the ring itself.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::squeue::{Entry, Flags};
use io_uring::types::{CancelBuilder, Fd, TimeoutFlags, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use super::Token;
use crate::buffer::{BufferRegistry, SlotQueue, BUFFER_GROUP};

/// The most slots one vectored send carries (and so the largest in-flight cap).
pub const MAX_IOV: usize = 16;

/// The `msghdr` and iovecs of one vectored send, at a fixed heap address while in flight.
struct MsgBuf {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// A socket address in the form `connect(2)` takes, kept at a fixed heap address.
pub struct RawSockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawSockAddr {
    pub fn new(addr: SocketAddr) -> RawSockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawSockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub fn socklen(&self) -> libc::socklen_t {
        self.len
    }
}

/// How a slot is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// `IORING_OP_SEND` from the slot's address.
    Send,
    /// `IORING_OP_WRITE_FIXED` with the slot as fixed buffer index.
    WriteFixed,
    /// `IORING_OP_SEND_ZC`, with the fixed buffer when registered; the slot is
    /// recycled only after the notification completion.
    ZeroCopy,
}

/// One worker's ring. Field order matters: the ring is dropped first, so the kernel lets
/// go of every op before the memory those ops point at is unmapped or freed.
pub struct Ring {
    ring: IoUring,
    pub buffers: BufferRegistry,
    /// Boxed, so that growing the Vec (a reload adds endpoints) never moves an address a
    /// connect op points at.
    #[allow(clippy::vec_box)]
    endpoints: Vec<Box<RawSockAddr>>,
    connect_timeout: Box<Timespec>,
    retry_interval: Box<Timespec>,
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
    /// Submitted ops whose final completion has not been reaped.
    in_flight: usize,
    tick_one_shot: bool,
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
            retired_timespecs: Vec::new(),
            tick: timespec(tick),
            wake_counter: Box::new(0),
            msgs: Vec::new(),
            free_msgs: Vec::new(),
            in_flight: 0,
            tick_one_shot: false,
        }
    }

    /// Endpoint addresses known to this ring (ids `0..endpoints()`).
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// A reload added an endpoint: it gets the next id.
    pub fn add_endpoint(&mut self, addr: SocketAddr) {
        self.endpoints.push(Box::new(RawSockAddr::new(addr)));
    }

    /// A reload changed the dial timeouts; ops already queued keep the old values.
    pub fn set_dial_timeouts(&mut self, connect_timeout: Duration, retry_interval: Duration) {
        let old = std::mem::replace(&mut self.connect_timeout, timespec(connect_timeout));
        self.retired_timespecs.push(old);
        let old = std::mem::replace(&mut self.retry_interval, timespec(retry_interval));
        self.retired_timespecs.push(old);
    }

    /// Registers the buffer registry's slots and provided ring with this ring.
    pub fn register_buffers(&mut self) -> io::Result<crate::buffer::Registration> {
        self.buffers.register(&self.ring.submitter())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues one entry, submitting first when the submission queue is full.
    fn push(&mut self, entry: Entry) {
        loop {
            // SAFETY: every entry built by this type points only at memory owned by `self`
            // (registry slots, boxed timespecs and addresses, the wake counter), all of
            // which outlive the ring because of the field order above.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            // With SUBMIT_ALL and the kernel's CQ overflow list, a failed submit (EBUSY)
            // only delays: the kernel consumes the queue as completions are posted.
            if let Err(e) = self.ring.submit() {
                tracing::debug!("submit while the queue is full: {e}");
            }
        }
    }

    /// Multishot accept on a listening socket.
    pub fn accept(&mut self, fd: RawFd, token: Token) {
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// A receive that takes a slot from the provided ring only when data arrives. With
    /// `dont_wait` it completes at once with `-EAGAIN` when nothing is queued.
    pub fn recv(&mut self, fd: RawFd, dont_wait: bool, token: Token) {
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
        .user_data(token.encode());
        self.push(e);
    }

    /// Sends `len` bytes of `slot` from `offset`.
    pub fn send(
        &mut self,
        fd: RawFd,
        op: SendOp,
        slot: u16,
        offset: usize,
        len: usize,
        token: Token,
    ) {
        let ptr = self.buffers.ptr(slot, offset);
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
        self.push(e.user_data(token.encode()));
    }

    /// Sends the unsent parts of a direction's queue (up to [`MAX_IOV`] slots) in one
    /// `sendmsg`; `token`'s slot field carries the message id, to hand back to
    /// [`Ring::release_msg`] when the op completes.
    pub fn send_queue(&mut self, fd: RawFd, queue: &SlotQueue, token: Token) {
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
                iov_base: self.buffers.ptr(p.slot, p.offset).cast_mut().cast(),
                iov_len: p.len,
            };
            n += 1;
        }
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = n;
        let e = opcode::SendMsg::new(Fd(fd), &msg.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(token.slot(id).encode());
        self.push(e);
    }

    /// Frees a vectored send's message after its completion.
    pub fn release_msg(&mut self, id: u16) {
        self.free_msgs.push(id);
    }

    /// Connects `fd` to endpoint `endpoint`, failing with `ECANCELED` after the connect timeout.
    pub fn connect(&mut self, fd: RawFd, endpoint: usize, token: Token, timeout_token: Token) {
        let addr = &self.endpoints[endpoint];
        let e = opcode::Connect::new(Fd(fd), addr.as_ptr(), addr.socklen())
            .build()
            .flags(Flags::IO_LINK)
            .user_data(token.encode());
        let t = opcode::LinkTimeout::new(&*self.connect_timeout)
            .build()
            .user_data(timeout_token.encode());
        // The pair must be adjacent in the queue: make room for both first.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 {
            let _ = self.ring.submit();
        }
        self.push(e);
        self.push(t);
    }

    /// Cancels every op on `fd`.
    pub fn cancel_fd(&mut self, fd: RawFd, token: Token) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Fires once after `retry_interval`.
    pub fn retry_timer(&mut self, token: Token) {
        let e = opcode::Timeout::new(&*self.retry_interval)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Cancels the op submitted with `target`.
    pub fn cancel_op(&mut self, target: Token, token: Token) {
        let e = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Cancels every op in the ring (shutdown).
    pub fn cancel_all(&mut self, token: Token) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::any().all())
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// A timer firing every tick: a multishot timeout, or with `one_shot` (once the
    /// kernel refused multishot) a single expiry to re-arm each time.
    pub fn tick(&mut self, token: Token, one_shot: bool) {
        self.tick_one_shot |= one_shot;
        let flags = if self.tick_one_shot {
            TimeoutFlags::empty()
        } else {
            TimeoutFlags::MULTISHOT
        };
        let e = opcode::Timeout::new(&*self.tick)
            .flags(flags)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Reads the wake eventfd (another thread asks this worker to look at its flags).
    pub fn wait_wake(&mut self, eventfd: RawFd, token: Token) {
        let ptr: *mut u64 = &mut *self.wake_counter;
        let e = opcode::Read::new(Fd(eventfd), ptr.cast(), 8)
            .build()
            .user_data(token.encode());
        self.push(e);
    }

    /// Submits what is queued and waits for at least one completion.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves the available completions into `out` as (user_data, result, flags).
    pub fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        out.clear();
        for cqe in self.ring.completion() {
            if !cqueue::more(cqe.flags()) {
                self.in_flight -= 1;
            }
            out.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }
}
