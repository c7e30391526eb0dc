//! The per-worker connection table: a slab of sessions with a generation per slot, so a
//! completion that arrives for a freed and reused slot is recognised and dropped.

use std::os::fd::RawFd;

use slab::Slab;

use crate::buffer::SlotQueue;

use crate::uring::{GEN_MASK, MAX_KEYS};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Dialing the upstream; the client waits.
    Connecting,
    /// Relaying both ways (possibly one way after a half-close).
    Active,
    /// Tearing down: ops are being cancelled; freed when the last completion arrives.
    Draining,
}

/// Direction 0 carries client bytes to the upstream, direction 1 the reverse.
pub const CLIENT_TO_UPSTREAM: usize = 0;
pub const UPSTREAM_TO_CLIENT: usize = 1;

/// One direction of a session: what it received and still has to send.
#[derive(Debug, Default)]
pub struct Direction {
    /// Held slots, oldest first; the front ones are being sent when `sending`.
    pub queue: SlotQueue,
    pub recv_armed: bool,
    /// The armed receive is a probe (`MSG_DONTWAIT`) for more queued data after a full slot.
    pub probing: bool,
    pub sending: bool,
    /// Waiting on the registry's wait list for a free slot (ENOBUFS).
    pub parked: bool,
    /// The source sent FIN.
    pub eof: bool,
    /// The FIN has been passed on to the destination (`shutdown(SHUT_WR)`).
    pub shut: bool,
}

/// A client and its upstream.
#[derive(Debug)]
pub struct Session {
    pub gen: u32,
    pub state: State,
    pub client_fd: RawFd,
    /// -1 until the upstream socket exists.
    pub upstream_fd: RawFd,
    pub listener: u16,
    pub endpoint: u16,
    pub dirs: [Direction; 2],
    /// Submitted ops of this session whose last completion has not arrived.
    pub ops: u32,
    /// Per direction: whether its destination is off this host (zero-copy may pay off).
    pub remote: [bool; 2],
    /// Close with RST (SO_LINGER 0) rather than FIN: a peer reset or an error.
    pub reset: bool,
}

impl Session {
    /// The fd a direction receives from and the fd it sends to.
    pub fn fds(&self, dir: usize) -> (RawFd, RawFd) {
        if dir == CLIENT_TO_UPSTREAM {
            (self.client_fd, self.upstream_fd)
        } else {
            (self.upstream_fd, self.client_fd)
        }
    }
}

/// The slab plus the generation counter.
pub struct ConnTable {
    slab: Slab<Session>,
    next_gen: u32,
}

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable {
            slab: Slab::new(),
            next_gen: 1,
        }
    }
}

impl ConnTable {
    /// Adds a session for an accepted client; `None` when the table is full.
    pub fn insert(&mut self, client_fd: RawFd, listener: u16) -> Option<(usize, u32)> {
        if self.slab.len() >= MAX_KEYS {
            return None;
        }
        let gen = self.next_gen;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        let key = self.slab.insert(Session {
            gen,
            state: State::Connecting,
            client_fd,
            upstream_fd: -1,
            listener,
            endpoint: 0,
            dirs: Default::default(),
            ops: 0,
            reset: false,
            remote: [false; 2],
        });
        Some((key, gen))
    }

    /// The session at `key` if it is still the one of generation `gen`.
    pub fn get_mut(&mut self, key: usize, gen: u32) -> Option<&mut Session> {
        self.slab.get_mut(key).filter(|s| s.gen == gen)
    }

    pub fn remove(&mut self, key: usize) -> Session {
        self.slab.remove(key)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Keys and generations of every session (for shutdown).
    pub fn keys(&self) -> Vec<(usize, u32)> {
        self.slab.iter().map(|(k, s)| (k, s.gen)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_not_found() {
        let mut t = ConnTable::default();
        let (k, g) = t.insert(10, 0).expect("room");
        t.remove(k);
        let (k2, g2) = t.insert(11, 0).expect("room");
        assert_eq!(k, k2, "slab reuses the freed key");
        assert_ne!(g, g2);
        assert!(t.get_mut(k, g).is_none());
        assert!(t.get_mut(k2, g2).is_some());
    }
}
