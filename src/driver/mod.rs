//! The driver seam: what a worker asks of its data plane (submit an op, reap completions,
//! its buffer registry), with two implementations, io_uring ([`uring::Ring`]) and epoll
//! ([`epoll::Epoll`]), and the start-up choice between them ([`select`]).
//!
//! Every op is submitted with an opaque `user_data` and completes exactly as io_uring
//! would complete it (the same result codes, `more` for multishot ops, the slot a
//! receive picked, zero-copy notifications), so the worker cannot tell which driver runs
//! it. Only this module and [`crate::buffer`] may hold `unsafe` code.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::buffer::{BufferRegistry, Pending, SlotQueue};

pub(crate) mod epoll;
pub(crate) mod select;
pub(crate) mod sys;
pub(crate) mod uring;

pub use select::{DataPlane, DataPlaneSetting, Plan};

/// The most slots one vectored send carries (and so the largest in-flight cap).
pub const MAX_IOV: usize = 16;

/// How a slot is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// A plain send from the slot's address.
    Send,
    /// `IORING_OP_WRITE_FIXED` with the slot as fixed buffer index (io_uring only; epoll
    /// sends it as a plain send).
    WriteFixed,
    /// `IORING_OP_SEND_ZC`, with the fixed buffer when registered; the slot is recycled
    /// only after the notification completion (io_uring only; epoll sends it plainly,
    /// with no notification).
    ZeroCopy,
}

/// One completed op, as the worker sees it whichever driver ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    /// Bytes or a count on success, `-errno` on failure.
    pub res: i32,
    /// A multishot op (accept, tick) goes on, or a zero-copy send's notification follows.
    pub more: bool,
    /// This is a zero-copy send's notification (the kernel let go of the slot).
    pub notif: bool,
    /// The slot a receive picked at completion time.
    pub buffer: Option<u16>,
}

/// What waiting for completions came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Submitted and/or waited; reap and go on.
    Ok,
    /// Interrupted or busy (EINTR, EAGAIN, EBUSY): reap what is there and try again.
    Retry,
    /// EBADR: the kernel dropped at least one completion (CQ overflow it could not
    /// buffer). Some op's completion is lost; the driver itself still works.
    DroppedCompletion,
    /// Anything else: the driver is unusable.
    Fatal,
}

/// Sorts a wait error into what the loop does about it.
pub fn classify_enter_error(e: &io::Error) -> Entered {
    match e.raw_os_error() {
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Entered::Retry,
        Some(libc::EBADR) => Entered::DroppedCompletion,
        _ => Entered::Fatal,
    }
}

/// A worker's data plane. Submitting never completes an op on the spot: its completion
/// is reaped after the next [`Driver::submit_and_wait`], so handlers never re-enter.
///
/// Ownership: an fd passed to an op stays open until that op's final completion is
/// reaped (the worker closes fds only when an entry has no op in flight); slots are the
/// registry's, and a send's slots stay held until its completion.
pub(crate) trait Driver {
    fn buffers(&self) -> &BufferRegistry;
    fn buffers_mut(&mut self) -> &mut BufferRegistry;

    /// Multishot accept on a listening socket; every accepted fd completes with `more`
    /// until an error ends it.
    fn accept(&mut self, fd: RawFd, user_data: u64);
    /// A receive that takes a slot only when data arrives (`-ENOBUFS` when none is free).
    /// With `dont_wait` it completes at once with `-EAGAIN` when nothing is queued.
    fn recv(&mut self, fd: RawFd, dont_wait: bool, user_data: u64);
    /// Sends one held slot's unsent part.
    fn send(&mut self, fd: RawFd, op: SendOp, part: Pending, user_data: u64);
    /// Sends the unsent parts of up to [`MAX_IOV`] slots of `queue` in one vectored send.
    /// `user_data` gets the id of the message the driver keeps for it, to hand back with
    /// [`Driver::release_msg`] after the completion.
    fn send_queue(&mut self, fd: RawFd, queue: &SlotQueue, user_data: &dyn Fn(u16) -> u64);
    fn release_msg(&mut self, id: u16);
    /// Connects `fd` to endpoint `endpoint`; after the connect timeout the connect
    /// completes with `-ECANCELED` and its timeout with `-ETIME` (else the timeout
    /// completes with `-ECANCELED`).
    fn connect(&mut self, fd: RawFd, endpoint: usize, user_data: u64, timeout_user_data: u64);
    /// Cancels every op on `fd` (each completes with `-ECANCELED`).
    fn cancel_fd(&mut self, fd: RawFd, user_data: u64);
    /// Cancels the op submitted with `target`.
    fn cancel_op(&mut self, target: u64, user_data: u64);
    /// Cancels every op (shutdown).
    fn cancel_all(&mut self, user_data: u64);
    /// Fires once after `retry_interval` (completes with `-ETIME`).
    fn retry_timer(&mut self, user_data: u64);
    /// A timer firing every tick (multishot), or once with `one_shot`.
    fn tick(&mut self, user_data: u64, one_shot: bool);
    /// Completes with the poll events when `fd` is reset, hung up or its peer shut down.
    fn watch_hangup(&mut self, fd: RawFd, user_data: u64);
    /// Reads the wake eventfd.
    fn wait_wake(&mut self, eventfd: RawFd, user_data: u64);
    /// `fd` leaves this driver (`closing`, or handed to the warm pool); no op of it may be
    /// in flight. A later fd with the same number is a new one.
    fn release_fd(&mut self, fd: RawFd, closing: bool);

    /// Endpoint addresses known to this driver (ids `0..endpoints()`).
    fn endpoints(&self) -> usize;
    /// A reload added an endpoint: it gets the next id.
    fn add_endpoint(&mut self, addr: SocketAddr);
    /// A reload changed the dial timeouts; ops already submitted keep the old values.
    fn set_dial_timeouts(&mut self, connect_timeout: Duration, retry_interval: Duration);

    /// Ops submitted whose final completion has not been reaped.
    fn in_flight(&self) -> usize;
    /// Submits what is queued and waits for at least one completion.
    fn submit_and_wait(&mut self) -> io::Result<Entered>;
    /// Moves the available completions into `out`.
    fn reap(&mut self, out: &mut Vec<Completion>);
}
