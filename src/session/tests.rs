//! Unit tests of the session state machine, without a network: a mock [`Driver`]
//! records what the sessions submit, and each test feeds back the completions a kernel
//! would produce. Client and upstream "sockets" are eventfds (a dial makes a real but
//! never connected socket): no byte goes anywhere.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::admission::Admission;
use crate::buffer::BufferRegistry;
use crate::config::Config;
use crate::driver::{sys, Entered};
use crate::settings::LiveConfig;
use crate::upstream::{EndpointTable, WarmPool};

/// One op a session submitted to the mock.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    Recv {
        fd: RawFd,
        user_data: u64,
    },
    Send {
        fd: RawFd,
        len: usize,
        user_data: u64,
    },
    Connect {
        endpoint: usize,
        user_data: u64,
    },
    CancelFd {
        fd: RawFd,
        user_data: u64,
    },
    RetryTimer,
    Other,
}

/// Records ops; never completes one on its own.
struct Mock {
    buffers: BufferRegistry,
    subs: Vec<Sub>,
    released: Vec<RawFd>,
}

impl Driver for Mock {
    fn buffers(&self) -> &BufferRegistry {
        &self.buffers
    }
    fn buffers_mut(&mut self) -> &mut BufferRegistry {
        &mut self.buffers
    }
    fn accept(&mut self, _: RawFd, _: u64) {
        self.subs.push(Sub::Other);
    }
    fn recv(&mut self, fd: RawFd, _: bool, user_data: u64) {
        self.subs.push(Sub::Recv { fd, user_data });
    }
    fn send(&mut self, fd: RawFd, _: SendOp, part: Pending, user_data: u64) {
        let len = part.len();
        self.subs.push(Sub::Send { fd, len, user_data });
    }
    fn send_queue(&mut self, fd: RawFd, queue: &SlotQueue, user_data: &dyn Fn(u16) -> u64) {
        let len = self.buffers.pending(queue).map(|p| p.len()).sum();
        let user_data = user_data(0);
        self.subs.push(Sub::Send { fd, len, user_data });
    }
    fn release_msg(&mut self, _: u16) {}
    fn connect(&mut self, _: RawFd, endpoint: usize, user_data: u64, _: u64) {
        self.subs.push(Sub::Connect {
            endpoint,
            user_data,
        });
    }
    fn cancel_fd(&mut self, fd: RawFd, user_data: u64) {
        self.subs.push(Sub::CancelFd { fd, user_data });
    }
    fn cancel_op(&mut self, _: u64, _: u64) {
        self.subs.push(Sub::Other);
    }
    fn cancel_all(&mut self, _: u64) {
        self.subs.push(Sub::Other);
    }
    fn retry_timer(&mut self, _: u64) {
        self.subs.push(Sub::RetryTimer);
    }
    fn tick(&mut self, _: u64, _: bool) {}
    fn watch_hangup(&mut self, _: RawFd, _: u64) {
        self.subs.push(Sub::Other);
    }
    fn wait_wake(&mut self, _: RawFd, _: u64) {}
    fn release_fd(&mut self, fd: RawFd, closing: bool) {
        if closing {
            self.released.push(fd);
        }
    }
    fn endpoints(&self) -> usize {
        2
    }
    fn add_endpoint(&mut self, _: SocketAddr) {}
    fn set_dial_timeouts(&mut self, _: Duration, _: Duration) {}
    fn in_flight(&self) -> usize {
        0
    }
    fn submit_and_wait(&mut self) -> std::io::Result<Entered> {
        Ok(Entered::Ok)
    }
    fn reap(&mut self, _: &mut Vec<Completion>) {}
}

const SLOT: usize = 4096;

fn context() -> Context<Mock> {
    let yaml = "listeners:\n  - name: t\n    listen: 127.0.0.1:0\n    upstreams: [127.0.0.1:9, 127.0.0.1:11]\nworkers: 1\nconnection:\n  pool:\n    enabled: false\n";
    let config = Config::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let addrs: Vec<SocketAddr> = ["127.0.0.1:9", "127.0.0.1:11"]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
    let now = Instant::now();
    let shared = Shared::new(
        Vec::new(),
        Admission::new(100, 100, 1),
        EndpointTable::per_listener(&[addrs], 1, 1),
        WarmPool::new(2, 0, Duration::from_secs(1), Duration::from_secs(1), now).expect("pool"),
        LiveConfig::new(&config, vec![vec![0, 1]]),
        config.connection.health_check.clone(),
    );
    let listener = Listener {
        fd: sys::eventfd().expect("eventfd"),
        endpoints: vec![0, 1],
        next: 0,
        accept_armed: false,
        loopback: true,
    };
    let mock = Mock {
        buffers: BufferRegistry::new(8, SLOT).expect("buffers"),
        subs: Vec::new(),
        released: Vec::new(),
    };
    let settings = Settings::from_config(&config);
    Context::new(0, mock, vec![listener], settings, Arc::new(shared), 2, now)
}

/// An fd for a fake peer; the session owns (and closes) it.
fn fake_fd() -> RawFd {
    sys::eventfd().expect("eventfd").into_raw_fd()
}

/// Feeds the completion of the op submitted with `user_data`.
fn complete(c: &mut Context<Mock>, user_data: u64, res: i32, buffer: Option<u16>) {
    let Some(Op::Session(id, op)) = Op::decode(user_data) else {
        panic!("not a session op: {user_data:#x}");
    };
    let done = Completion {
        user_data,
        res,
        more: false,
        notif: false,
        buffer,
    };
    c.on_session_op(id, op, done);
}

/// An active session over two fake fds, both halves receiving.
fn active(c: &mut Context<Mock>) -> (SessionId, RawFd, RawFd) {
    let (client, upstream) = (fake_fd(), fake_fd());
    let id = c
        .table
        .insert(client, ListenerId(0), State::Queued, 0)
        .expect("room");
    c.table.get_mut(id).expect("session").upstream_fd = upstream;
    c.activate(id);
    (id, client, upstream)
}

/// What the ops submitted so far say, in order, through `pick`.
fn submitted<T>(c: &Context<Mock>, pick: impl Fn(&Sub) -> Option<T>) -> Vec<T> {
    c.driver.subs.iter().filter_map(pick).collect()
}

fn recv_of(c: &Context<Mock>, fd: RawFd) -> u64 {
    c.driver
        .subs
        .iter()
        .rev()
        .find_map(|s| match *s {
            Sub::Recv { fd: f, user_data } if f == fd => Some(user_data),
            _ => None,
        })
        .expect("a receive on the fd")
}

#[test]
fn a_failed_dial_tries_the_other_endpoint_at_once() {
    let mut c = context();
    c.accept_client(ListenerId(0), fake_fd());
    let dials: Vec<(usize, u64)> = submitted(&c, |s| match *s {
        Sub::Connect {
            endpoint,
            user_data,
        } => Some((endpoint, user_data)),
        _ => None,
    });
    assert_eq!(dials.len(), 1, "{:?}", c.driver.subs);
    let (first, user_data) = dials[0];
    complete(&mut c, user_data, -libc::ECONNREFUSED, None);
    let retried: Vec<usize> = submitted(&c, |s| match *s {
        Sub::Connect { endpoint, .. } => Some(endpoint),
        _ => None,
    });
    assert_eq!(retried.len(), 2, "{:?}", c.driver.subs);
    assert_ne!(retried[1], first, "the other endpoint is dialed next");
    assert!(
        !c.driver.subs.contains(&Sub::RetryTimer),
        "no wait while another endpoint is untried"
    );
    assert_eq!(c.counters.connect_retries, 1);
}

#[test]
fn a_fin_is_passed_only_after_the_queue_drains() {
    let mut c = context();
    let (id, client, upstream) = active(&mut c);
    let half = Half::ClientToUpstream;
    // The kernel picks a free slot for the client's bytes.
    let slot = c.driver.buffers_mut().pop_free().expect("a free slot");
    let recv = recv_of(&c, client);
    complete(&mut c, recv, 100, Some(slot));
    let send = c
        .driver
        .subs
        .iter()
        .find_map(|s| match *s {
            Sub::Send { fd, len, user_data } if fd == upstream => Some((len, user_data)),
            _ => None,
        })
        .expect("a send to the upstream");
    assert_eq!(send.0, 100);
    // The client's FIN comes while its bytes are still being sent.
    let recv = recv_of(&c, client);
    complete(&mut c, recv, 0, None);
    let s = c.table.get_mut(id).expect("session");
    assert!(s.dir(half).eof());
    assert!(!s.dir(half).shut(), "no FIN before the data");
    complete(&mut c, send.1, 100, None);
    let s = c.table.get_mut(id).expect("session");
    assert!(s.dir(half).queue.is_empty());
    assert!(s.dir(half).shut(), "the FIN follows the data");
    assert_eq!(c.driver.buffers().in_use(), 0, "the slot went back");
}

#[test]
fn close_waits_for_every_op_in_flight() {
    let mut c = context();
    let (id, client, upstream) = active(&mut c);
    let recvs = [recv_of(&c, client), recv_of(&c, upstream)];
    assert_eq!(c.table.get_mut(id).expect("session").ops, 2);
    c.begin_close(id, Close::Reset);
    let cancels: Vec<u64> = submitted(&c, |s| match *s {
        Sub::CancelFd { user_data, .. } => Some(user_data),
        _ => None,
    });
    assert_eq!(cancels.len(), 2, "one cancel per fd");
    let mut left: Vec<u64> = cancels.into_iter().chain(recvs).collect();
    while let Some(user_data) = left.pop() {
        assert!(
            c.table.get_mut(id).is_some(),
            "freed with {} ops in flight",
            left.len() + 1
        );
        assert!(c.driver.released.is_empty(), "an fd closed too early");
        complete(&mut c, user_data, -libc::ECANCELED, None);
    }
    assert!(c.table.get_mut(id).is_none(), "freed after its last op");
    assert!(c.table.is_empty());
    let mut released = c.driver.released.clone();
    released.sort_unstable();
    let mut fds = vec![client, upstream];
    fds.sort_unstable();
    assert_eq!(released, fds);
}

#[test]
fn a_stale_completion_is_dropped_and_its_slot_returned() {
    let mut c = context();
    let (id, client, _) = active(&mut c);
    let user_data = recv_of(&c, client);
    c.begin_close(id, Close::Fin);
    let cancels: Vec<u64> = c
        .driver
        .subs
        .iter()
        .filter_map(|s| match *s {
            Sub::CancelFd { user_data, .. } => Some(user_data),
            Sub::Recv { user_data, .. } => Some(user_data),
            _ => None,
        })
        .filter(|&u| u != user_data)
        .collect();
    for u in cancels {
        complete(&mut c, u, -libc::ECANCELED, None);
    }
    complete(&mut c, user_data, -libc::ECANCELED, None);
    assert!(c.table.is_empty());
    // A receive of the freed session that raced the cancel filled a slot.
    let slot = c.driver.buffers_mut().pop_free().expect("a free slot");
    complete(&mut c, user_data, 10, Some(slot));
    assert_eq!(c.driver.buffers().in_use(), 0);
}

/// The handlers decide; the caller closes. A FIN on each half, after its data: the
/// first leaves the session going, the second says close with a FIN.
#[test]
fn the_second_fin_decides_an_orderly_close() {
    let mut c = context();
    let (id, _, _) = active(&mut c);
    let next = c.on_recv(id, Half::ClientToUpstream, 0, None);
    assert_eq!(next, Next::Continue, "one half still open");
    let next = c.on_recv(id, Half::UpstreamToClient, 0, None);
    assert_eq!(next, Next::Close(Close::Fin));
    assert!(
        c.table
            .get_mut(id)
            .is_some_and(|s| s.state == State::Active),
        "the handler only decides: the session is closed by whoever applies it"
    );
    c.apply(id, next);
    assert!(c
        .table
        .get_mut(id)
        .is_some_and(|s| s.state == State::Draining));
}

/// A reset of one peer with nothing owed to the other is passed on as a reset.
#[test]
fn a_failed_peer_with_nothing_owed_decides_a_reset() {
    let mut c = context();
    let (id, _, _) = active(&mut c);
    let next = c.on_recv(id, Half::UpstreamToClient, -libc::ECONNRESET, None);
    assert_eq!(next, Next::Close(Close::Reset));
    assert_eq!(
        c.counters.upstream_errors, 1,
        "counted on the side it came from"
    );
    // A cancelled receive (the session is closing) decides nothing.
    let (id, _, _) = active(&mut c);
    let next = c.on_recv(id, Half::ClientToUpstream, -libc::ECANCELED, None);
    assert_eq!(next, Next::Continue);
    assert_eq!(c.counters.client_errors, 0);
}
