//! The per-worker session table: a slab of sessions with a generation per slot, so a
//! completion that arrives for a freed and reused slot is recognised and dropped; and the
//! active list, least recently active first, that the sweep walks from its old end.

use std::os::fd::RawFd;

use slab::Slab;

use super::id::{Close, EndpointId, Half, ListenerId, SessionId, GEN_MASK, MAX_KEYS};
use crate::buffer::SlotQueue;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A client waiting for admission under `max_active`; nothing is read from it yet.
    Queued,
    /// Dialing the upstream for a client.
    Connecting,
    /// A dial failed on every healthy endpoint; the next try waits `retry_interval`.
    RetryWait,
    /// Relaying both ways (possibly one way after a half-close).
    Active,
    /// Tearing down: ops are being cancelled; freed when the last completion arrives.
    Draining,
    /// A dial for the warm pool (no client).
    PoolDial,
    /// A pool dial that connected; it joins the pool once its last completion is in.
    PoolReady,
}

/// One direction of a session: what it received and still has to send. Its ten flags
/// share one word, so a session's table entry stays at 80 bytes (RSS per idle session).
#[derive(Debug, Default)]
pub struct Direction {
    /// Held slots, oldest first; the front ones are being sent when `sending`.
    pub queue: SlotQueue,
    flags: u16,
    /// Worker clock (ms, wrapping) since when data has waited for the destination
    /// without it taking a byte: set when the queue fills from empty and on each send
    /// that made progress.
    pub waiting_since: u32,
}

macro_rules! direction_flags {
    ($($(#[doc = $doc:literal])* $bit:literal $get:ident $set:ident;)*) => {
        impl Direction {
            $(
                $(#[doc = $doc])*
                pub fn $get(&self) -> bool {
                    self.flags & (1 << $bit) != 0
                }

                pub fn $set(&mut self, on: bool) {
                    if on {
                        self.flags |= 1 << $bit;
                    } else {
                        self.flags &= !(1 << $bit);
                    }
                }
            )*
        }
    };
}

direction_flags! {
    /// A receive is armed.
    0 recv_armed set_recv_armed;
    /// The armed receive is a probe (`MSG_DONTWAIT`) for more queued data after a full slot.
    1 probing set_probing;
    /// A send of the front slots is in flight.
    2 sending set_sending;
    /// Waiting on the registry's wait list for a free slot (ENOBUFS).
    3 parked set_parked;
    /// The source sent FIN.
    4 eof set_eof;
    /// The FIN has been passed on to the destination (`shutdown(SHUT_WR)`).
    5 shut set_shut;
    /// The destination failed (reset or error): nothing more is sent or received this
    /// way; what was queued for it is dropped (no peer can take it any more).
    6 dead set_dead;
    /// The armed receive was armed while the direction held slots: it is counted in the
    /// worker's `holder_armed` until it completes.
    7 armed_holding set_armed_holding;
    /// A `Hup` watch is armed on the source (set while parked without a slot).
    8 hup_armed set_hup_armed;
    /// On the worker's `holding` list (the send-timeout sweep looks at it).
    9 listed set_listed;
}

const NIL: u32 = u32::MAX;

/// A client and its upstream, or a pool dial.
#[derive(Debug)]
pub struct Session {
    pub gen: u32,
    pub state: State,
    /// -1 for a pool dial.
    pub client_fd: RawFd,
    /// -1 until the upstream socket exists.
    pub upstream_fd: RawFd,
    pub listener: ListenerId,
    pub endpoint: EndpointId,
    /// Indexed by [`Half::index`].
    pub dirs: [Direction; 2],
    /// Submitted ops of this session whose last completion has not arrived.
    /// u16 (a session has a handful of ops at most): with `retries`, it makes room for
    /// `started_ms` within 80 bytes.
    pub ops: u16,
    /// How the sockets are closed: a reset once a peer reset or an error asked for one.
    pub close: Close,
    /// One peer failed and the other is being given what was queued for it: at the close
    /// its unread input is discarded so that the close is a FIN after the data, not an
    /// RST that would throw away what its socket still buffers.
    pub flushing: bool,
    /// Per half: whether its destination is off this host (zero-copy may pay off).
    pub remote: [bool; 2],
    /// Holds one of the global `max_active` slots.
    pub permit: bool,
    /// Counted in its endpoint's active sessions (for `least_active`).
    pub counted: bool,
    /// Endpoints whose dial failed in this round of tries (bit = position in the
    /// listener's endpoint list, the first 64 only).
    pub tried: u64,
    /// Dial attempts after the first.
    pub retries: u16,
    /// Worker clock (ms) of the last byte either way; for a queued client, when it queued;
    /// while dialing, when the dial started.
    pub last_active: u64,
    /// Worker clock (ms, wrapping) when the session started relaying: its duration.
    pub started_ms: u32,
    prev: u32,
    next: u32,
    in_list: bool,
}

impl Session {
    /// The fd a half receives from and the fd it sends to.
    pub fn fds(&self, half: Half) -> (RawFd, RawFd) {
        match half {
            Half::ClientToUpstream => (self.client_fd, self.upstream_fd),
            Half::UpstreamToClient => (self.upstream_fd, self.client_fd),
        }
    }

    pub fn dir(&self, half: Half) -> &Direction {
        &self.dirs[half.index()]
    }

    pub fn dir_mut(&mut self, half: Half) -> &mut Direction {
        &mut self.dirs[half.index()]
    }
}

/// The slab, the generation counter and the active list.
pub struct SessionTable {
    slab: Slab<Session>,
    next_gen: u32,
    head: u32,
    tail: u32,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            slab: Slab::new(),
            next_gen: 1,
            head: NIL,
            tail: NIL,
        }
    }
}

impl SessionTable {
    /// Adds an entry; `None` when the table is full.
    pub fn insert(
        &mut self,
        client_fd: RawFd,
        listener: ListenerId,
        state: State,
        now_ms: u64,
    ) -> Option<SessionId> {
        if self.slab.len() >= MAX_KEYS - 1 {
            return None;
        }
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        let key = self.slab.insert(Session {
            gen,
            state,
            client_fd,
            upstream_fd: -1,
            listener,
            endpoint: EndpointId(0),
            dirs: Default::default(),
            ops: 0,
            close: Close::Fin,
            flushing: false,
            remote: [false; 2],
            permit: false,
            counted: false,
            tried: 0,
            retries: 0,
            last_active: now_ms,
            started_ms: now_ms as u32,
            prev: NIL,
            next: NIL,
            in_list: false,
        });
        Some(SessionId::new(key, gen))
    }

    /// The session `id` names, if it is still there (not a later one at its key).
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.slab.get_mut(id.key()).filter(|s| s.gen == id.gen)
    }

    pub fn get(&self, key: usize) -> Option<&Session> {
        self.slab.get(key)
    }

    pub fn remove(&mut self, key: usize) -> Session {
        self.unlink(key);
        self.slab.remove(key)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every entry (for shutdown).
    pub fn ids(&self) -> Vec<SessionId> {
        self.slab
            .iter()
            .map(|(k, s)| SessionId::new(k, s.gen))
            .collect()
    }

    /// Records activity: the session moves to the young end of the active list. Called
    /// per received chunk; a no-op within the same millisecond.
    pub fn touch(&mut self, key: usize, now_ms: u64) {
        let Some(s) = self.slab.get_mut(key) else {
            return;
        };
        if s.in_list && s.last_active == now_ms {
            return;
        }
        s.last_active = now_ms;
        self.unlink(key);
        self.link_back(key);
    }

    /// Takes a session off the active list (it is closing).
    pub fn unlink(&mut self, key: usize) {
        let Some(s) = self.slab.get_mut(key) else {
            return;
        };
        if !s.in_list {
            return;
        }
        let (prev, next) = (s.prev, s.next);
        s.in_list = false;
        s.prev = NIL;
        s.next = NIL;
        match self.slab.get_mut(prev as usize) {
            Some(p) if prev != NIL => p.next = next,
            _ => self.head = next,
        }
        match self.slab.get_mut(next as usize) {
            Some(n) if next != NIL => n.prev = prev,
            _ => self.tail = prev,
        }
    }

    fn link_back(&mut self, key: usize) {
        let tail = self.tail;
        if let Some(s) = self.slab.get_mut(key) {
            s.in_list = true;
            s.prev = tail;
            s.next = NIL;
        }
        match self.slab.get_mut(tail as usize) {
            Some(t) if tail != NIL => t.next = key as u32,
            _ => self.head = key as u32,
        }
        self.tail = key as u32;
    }

    /// The least recently active session, if any, and its last activity.
    pub fn oldest_active(&self) -> Option<(SessionId, u64)> {
        if self.head == NIL {
            return None;
        }
        let key = self.head as usize;
        self.slab
            .get(key)
            .map(|s| (SessionId::new(key, s.gen), s.last_active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_not_found() {
        let mut t = SessionTable::default();
        let a = t
            .insert(10, ListenerId(0), State::Connecting, 0)
            .expect("room");
        t.remove(a.key());
        let b = t
            .insert(11, ListenerId(0), State::Connecting, 0)
            .expect("room");
        assert_eq!(a.key, b.key, "slab reuses the freed key");
        assert_ne!(a.gen, b.gen);
        assert!(t.get_mut(a).is_none());
        assert!(t.get_mut(b).is_some());
    }

    #[test]
    fn a_session_stays_small() {
        // RSS per idle session is this plus the slab's spare capacity; benches/compare.rs
        // measures it against HAProxy and nginx.
        assert!(
            std::mem::size_of::<Session>() <= 80,
            "{}",
            std::mem::size_of::<Session>()
        );
    }

    #[test]
    fn active_list_is_least_recently_active_first() {
        let mut t = SessionTable::default();
        let keys: Vec<usize> = (0..4)
            .map(|i| {
                t.insert(i, ListenerId(0), State::Active, 0)
                    .expect("room")
                    .key()
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            t.touch(*k, 10 + i as u64);
        }
        assert_eq!(t.oldest_active().map(|o| o.0.key()), Some(keys[0]));
        t.touch(keys[0], 20);
        assert_eq!(
            t.oldest_active().map(|o| (o.0.key(), o.1)),
            Some((keys[1], 11))
        );
        t.remove(keys[1]);
        t.unlink(keys[2]);
        assert_eq!(t.oldest_active().map(|o| o.0.key()), Some(keys[3]));
        t.remove(keys[3]);
        assert_eq!(
            t.oldest_active().map(|o| (o.0.key(), o.1)),
            Some((keys[0], 20))
        );
        t.remove(keys[0]);
        assert_eq!(t.oldest_active(), None);
    }
}
