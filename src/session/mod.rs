//! Sessions: a client paired with an upstream, and the warm pool's dials, as a state
//! machine over one worker's [`Context`]: admission (`admit.rs`), the upstream side
//! (`connect.rs`), the relay of both halves (`relay.rs`) and teardown (`close.rs`).
//!
//! Every op a session submits goes through [`submit`], the only place that counts an op
//! in flight, and its completion through [`completed`], the only place that uncounts it:
//! an entry's fds are closed and its slots freed only once no op of it is in flight.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::{Pending, SlotQueue};
use crate::config::SendMode;
use crate::driver::{Completion, Driver, SendOp};
use crate::logging::LogLimits;
use crate::metrics::{EndpointCounters, WorkerCounters, WorkerHistograms};
use crate::settings::Settings;
use crate::shared::Shared;

mod admit;
mod close;
mod connect;
pub(crate) mod id;
pub(crate) mod op;
mod relay;
pub(crate) mod table;
#[cfg(test)]
mod tests;

pub(crate) use id::{Close, EndpointId, Half, ListenerId, Next, Peer, SessionId};
pub(crate) use op::{Op, SessionOp};
pub(crate) use table::{Session, SessionTable, State};

/// The smallest send `send_mode: auto` makes zero-copy.
const ZEROCOPY_MIN: usize = 16 * 1024;

/// What a worker knows about one listener.
pub(crate) struct Listener {
    pub fd: OwnedFd,
    /// Endpoint ids of this listener.
    pub endpoints: Vec<usize>,
    /// Round-robin cursor.
    pub next: usize,
    /// The multishot accept is armed (it ends on errors such as EMFILE: re-armed next tick).
    pub accept_armed: bool,
    /// Clients of a loopback listener are local: zero-copy sends never pay off for them.
    pub loopback: bool,
}

/// Everything a session handler works with besides the session itself: the driver, the
/// table, the wait lists, settings, counters and the clock. The worker owns one and
/// feeds it completions; tests drive one with a mock driver.
pub(crate) struct Context<D: Driver> {
    pub index: usize,
    pub driver: D,
    pub table: SessionTable,
    pub listeners: Vec<Listener>,
    pub settings: Settings,
    /// Halves parked on ENOBUFS that held slots, served first come first served as
    /// slots return, after every one of `waiters_empty`.
    pub waiters: VecDeque<(SessionId, Half)>,
    /// Halves parked on ENOBUFS holding no slot: served first. Sessions that hold
    /// nothing never queue behind those that hold the pool (peers that do not read), so
    /// how long they wait does not grow with the number of such sessions.
    pub waiters_empty: VecDeque<(SessionId, Half)>,
    /// Halves that held slots when the send-timeout sweep last looked (each at most
    /// once: `Direction::listed`); entries of closed sessions go on the next sweep.
    pub holding: Vec<(SessionId, Half)>,
    /// Armed receives of halves that already hold a slot: each may still take one from
    /// the ring, so they count against the reserve (`buffer::reserve`).
    pub holder_armed: usize,
    pub counters: WorkerCounters,
    pub histograms: WorkerHistograms,
    /// Per endpoint id (as many as this worker knows).
    pub endpoint_counters: Vec<EndpointCounters>,
    pub log_limits: LogLimits,
    /// Client addresses by slab key, kept only while debug logging is on (a closed or
    /// reset socket no longer has a peer address to ask for).
    pub debug_peers: HashMap<usize, SocketAddr>,
    /// This worker's pool dials in flight (table entries that are no session).
    pub pool_dialing: usize,
    /// Queued clients of this worker, oldest first (for the queue timeout).
    pub queued: VecDeque<SessionId>,
    pub shared: Arc<Shared>,
    pub stopping: bool,
    /// Draining: listeners are closed, the sessions left finish on their own.
    pub listeners_closed: bool,
    pub now: Instant,
    /// Milliseconds since the worker started, read once per completion batch.
    pub now_ms: u64,
    /// Scratch: workers to wake after an admission call.
    pub woken: Vec<usize>,
}

impl<D: Driver> Context<D> {
    /// A worker's context with no session yet; `endpoints`: how many its driver knows.
    pub fn new(
        index: usize,
        driver: D,
        listeners: Vec<Listener>,
        settings: Settings,
        shared: Arc<Shared>,
        endpoints: usize,
        now: Instant,
    ) -> Context<D> {
        Context {
            index,
            driver,
            table: SessionTable::default(),
            listeners,
            settings,
            waiters: VecDeque::new(),
            waiters_empty: VecDeque::new(),
            holding: Vec::new(),
            holder_armed: 0,
            counters: WorkerCounters::default(),
            histograms: WorkerHistograms::default(),
            endpoint_counters: vec![EndpointCounters::default(); endpoints],
            log_limits: LogLimits::default(),
            debug_peers: HashMap::new(),
            pool_dialing: 0,
            queued: VecDeque::new(),
            shared,
            stopping: false,
            listeners_closed: false,
            now,
            now_ms: 0,
            woken: Vec::new(),
        }
    }
}

/// What a session asks of the driver; see [`submit`].
pub(crate) enum Submit<'a> {
    /// A dial of `endpoint`, with its timeout: two ops.
    Connect {
        fd: RawFd,
        endpoint: EndpointId,
    },
    RetryTimer,
    CancelRetryTimer,
    /// Cancels every op on `fd`.
    CancelFd(RawFd),
    Recv {
        half: Half,
        fd: RawFd,
        probe: bool,
    },
    Send {
        half: Half,
        fd: RawFd,
        op: SendOp,
        part: Pending,
    },
    /// A vectored send of a queue's unsent parts.
    SendQueue {
        half: Half,
        fd: RawFd,
        queue: &'a SlotQueue,
    },
    Hup {
        half: Half,
        fd: RawFd,
    },
}

/// Submits an op of session `id` and counts it in flight: the only place that does.
pub(crate) fn submit<D: Driver>(driver: &mut D, s: &mut Session, id: SessionId, what: Submit) {
    let op = |op| Op::Session(id, op).encode();
    match what {
        Submit::Connect { fd, endpoint } => {
            s.ops += 2;
            driver.connect(
                fd,
                endpoint.index(),
                op(SessionOp::Connect),
                op(SessionOp::ConnectTimeout),
            );
        }
        Submit::RetryTimer => {
            s.ops += 1;
            driver.retry_timer(op(SessionOp::RetryTimer));
        }
        Submit::CancelRetryTimer => {
            s.ops += 1;
            driver.cancel_op(op(SessionOp::RetryTimer), op(SessionOp::Cancel));
        }
        Submit::CancelFd(fd) => {
            s.ops += 1;
            driver.cancel_fd(fd, op(SessionOp::Cancel));
        }
        Submit::Recv { half, fd, probe } => {
            s.ops += 1;
            driver.recv(fd, probe, op(SessionOp::Recv(half)));
        }
        Submit::Send {
            half,
            fd,
            op: send,
            part,
        } => {
            s.ops += 1;
            driver.send(fd, send, part, op(SessionOp::Send(half, part.slot())));
        }
        Submit::SendQueue { half, fd, queue } => {
            s.ops += 1;
            driver.send_queue(fd, queue, &|msg| op(SessionOp::SendMsg(half, msg)));
        }
        Submit::Hup { half, fd } => {
            s.ops += 1;
            driver.watch_hangup(fd, op(SessionOp::Hup(half)));
        }
    }
}

/// A completion of one of `s`'s ops came in: uncounts the op once its last completion is
/// in (the only place that does). A zero-copy send's notification is not counted as one
/// of the session's ops: it only comes once the peer acknowledged the data (or the socket
/// is gone), so a closing session must not wait for it; the slot it holds keeps a
/// reference.
pub(crate) fn completed(s: &mut Session, op: SessionOp, c: &Completion) {
    let done = match op {
        SessionOp::Send(..) => !c.notif,
        _ => !c.more,
    };
    if done {
        s.ops -= 1;
    }
}

/// Which send op a half uses for `len` bytes, under `mode`, with the slots registered
/// as fixed buffers or not; `remote`: the destination is off this host.
pub(crate) fn send_op(mode: SendMode, registered: bool, remote: bool, len: usize) -> SendOp {
    match mode {
        SendMode::Send => SendOp::Send,
        SendMode::Fixed if registered => SendOp::WriteFixed,
        SendMode::Fixed => SendOp::Send,
        SendMode::Zerocopy => SendOp::ZeroCopy,
        // Loopback copies zero-copy pages anyway, and small sends lose to the
        // notification round trip; zero-copy from registered slots pays off for large
        // writes to a real network.
        SendMode::Auto if remote && registered && len >= ZEROCOPY_MIN => SendOp::ZeroCopy,
        SendMode::Auto => SendOp::Send,
    }
}

impl<D: Driver> Context<D> {
    /// Routes a completion of session `id`'s op `op`.
    pub fn on_session_op(&mut self, id: SessionId, op: SessionOp, c: Completion) {
        let Some(s) = self.table.get_mut(id) else {
            // A completion for a freed entry: nothing of it can be in use any more. A
            // zero-copy notification still holds its slot.
            if let SessionOp::Send(_, slot) = op {
                if c.notif {
                    self.release_slot(slot);
                }
            }
            self.drop_received(c.buffer);
            return;
        };
        completed(s, op, &c);
        let next = match op {
            SessionOp::Connect => self.on_connect(id, c.res),
            SessionOp::RetryTimer => {
                if self.table.get_mut(id).map(|s| s.state) == Some(State::RetryWait) {
                    self.connect_client(id);
                }
                Next::Continue
            }
            SessionOp::Recv(half) => self.on_recv(id, half, c.res, c.buffer),
            SessionOp::Send(half, slot) => self.on_send(id, half, slot, c),
            SessionOp::SendMsg(half, msg) => self.on_send_msg(id, half, msg, c.res),
            SessionOp::Hup(half) => self.on_hangup(id, half, c.res),
            SessionOp::ConnectTimeout | SessionOp::Cancel => Next::Continue,
        };
        self.apply(id, next);
        self.settle(id);
    }

    /// Does what a handler decided for session `id`.
    pub fn apply(&mut self, id: SessionId, next: Next) {
        match next {
            Next::Continue => {}
            Next::Close(how) => self.begin_close(id, how),
        }
    }

    pub fn endpoint_addr(&self, ep: EndpointId) -> SocketAddr {
        self.shared.endpoints.get(ep.index()).addr
    }

    /// Entries that have a client (pool dials have none).
    pub fn client_sessions(&self) -> usize {
        self.table.len().saturating_sub(self.pool_dialing)
    }

    /// Hands out the grants an admission call made: this worker's own at once, the other
    /// workers' by waking them.
    pub fn wake_granted(&mut self) {
        for w in std::mem::take(&mut self.woken) {
            if w == self.index {
                self.take_grants();
            } else {
                self.shared.wake(w);
            }
        }
    }
}
