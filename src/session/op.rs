//! [`Op`]: what a submitted op is, encoded into its `user_data` and decoded from its
//! completion here and nowhere else.
//!
//! Worker-level ops that exist once per worker take reserved values at the top of the
//! `u64` range (as monoio does for its timer and wake-up ops). Every other op packs,
//! from the low bits: kind (4), half (1), unused (3), slot or message id (16),
//! generation (20), key (20). The key of a reserved value is `MAX_KEYS - 1`, which the
//! table never hands out, and its kind nibble is none of the packed kinds; no op is 0
//! (the epoll driver uses 0 for "none").

use super::id::{Half, ListenerId, SessionId, GEN_MASK};

/// One submitted op, as its completion is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The multishot accept of a listener.
    Accept(ListenerId),
    /// The worker's periodic tick (multishot, or one-shot while stopping).
    Tick,
    /// The read of the worker's wake eventfd.
    Wake,
    /// A cancel the worker itself submitted (listeners at stop, everything at the end).
    Cancel,
    /// An op of one session (or pool dial).
    Session(SessionId, SessionOp),
}

/// An op of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOp {
    Connect,
    ConnectTimeout,
    /// The wait before a client's next dial round.
    RetryTimer,
    Recv(Half),
    /// A send of one slot.
    Send(Half, u16),
    /// A vectored send of several slots: the driver's message id.
    SendMsg(Half, u16),
    /// A parked half that holds no slot watches its source for a reset.
    Hup(Half),
    /// A cancel of the session's ops.
    Cancel,
}

const TICK: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;
const CANCEL: u64 = u64::MAX - 2;

const K_ACCEPT: u64 = 1;
const K_CONNECT: u64 = 2;
const K_CONNECT_TIMEOUT: u64 = 3;
const K_RECV: u64 = 4;
const K_SEND: u64 = 5;
const K_CANCEL: u64 = 6;
const K_SEND_MSG: u64 = 7;
const K_RETRY_TIMER: u64 = 8;
const K_HUP: u64 = 9;

fn pack(kind: u64, half: Half, slot: u16, key: u32, gen: u32) -> u64 {
    kind | ((half as u64) << 4)
        | (u64::from(slot) << 8)
        | (u64::from(gen & GEN_MASK) << 24)
        | (u64::from(key) << 44)
}

impl Op {
    pub fn encode(self) -> u64 {
        let c2u = Half::ClientToUpstream;
        match self {
            Op::Tick => TICK,
            Op::Wake => WAKE,
            Op::Cancel => CANCEL,
            Op::Accept(l) => pack(K_ACCEPT, c2u, 0, u32::from(l.0), 0),
            Op::Session(id, op) => {
                let (kind, half, slot) = match op {
                    SessionOp::Connect => (K_CONNECT, c2u, 0),
                    SessionOp::ConnectTimeout => (K_CONNECT_TIMEOUT, c2u, 0),
                    SessionOp::RetryTimer => (K_RETRY_TIMER, c2u, 0),
                    SessionOp::Recv(h) => (K_RECV, h, 0),
                    SessionOp::Send(h, slot) => (K_SEND, h, slot),
                    SessionOp::SendMsg(h, msg) => (K_SEND_MSG, h, msg),
                    SessionOp::Hup(h) => (K_HUP, h, 0),
                    SessionOp::Cancel => (K_CANCEL, c2u, 0),
                };
                pack(kind, half, slot, id.key, id.gen)
            }
        }
    }

    /// `None` for a value no op of this worker was submitted with.
    pub fn decode(v: u64) -> Option<Op> {
        match v {
            TICK => return Some(Op::Tick),
            WAKE => return Some(Op::Wake),
            CANCEL => return Some(Op::Cancel),
            _ => {}
        }
        let half = if (v >> 4) & 1 == 0 {
            Half::ClientToUpstream
        } else {
            Half::UpstreamToClient
        };
        let slot = ((v >> 8) & 0xffff) as u16;
        let id = SessionId {
            key: (v >> 44) as u32,
            gen: ((v >> 24) as u32) & GEN_MASK,
        };
        let op = match v & 0xf {
            K_ACCEPT => return Some(Op::Accept(ListenerId(id.key as u16))),
            K_CONNECT => SessionOp::Connect,
            K_CONNECT_TIMEOUT => SessionOp::ConnectTimeout,
            K_RETRY_TIMER => SessionOp::RetryTimer,
            K_RECV => SessionOp::Recv(half),
            K_SEND => SessionOp::Send(half, slot),
            K_SEND_MSG => SessionOp::SendMsg(half, slot),
            K_HUP => SessionOp::Hup(half),
            K_CANCEL => SessionOp::Cancel,
            _ => return None,
        };
        Some(Op::Session(id, op))
    }
}

#[cfg(test)]
mod tests {
    use super::super::id::MAX_KEYS;
    use super::*;

    fn round_trip(op: Op) {
        let v = op.encode();
        assert_ne!(v, 0, "{op:?}");
        assert_eq!(Op::decode(v), Some(op), "{op:?} as {v:#x}");
    }

    const LAST: SessionId = SessionId {
        key: (MAX_KEYS - 2) as u32,
        gen: GEN_MASK,
    };

    #[test]
    fn worker_ops_round_trip() {
        round_trip(Op::Tick);
        round_trip(Op::Wake);
        round_trip(Op::Cancel);
        round_trip(Op::Accept(ListenerId(0)));
        round_trip(Op::Accept(ListenerId(u16::MAX)));
    }

    #[test]
    fn session_ops_round_trip() {
        for id in [SessionId::new(0, 0), SessionId::new(7, 1), LAST] {
            round_trip(Op::Session(id, SessionOp::Connect));
            round_trip(Op::Session(id, SessionOp::ConnectTimeout));
            round_trip(Op::Session(id, SessionOp::RetryTimer));
            round_trip(Op::Session(id, SessionOp::Cancel));
            for h in Half::BOTH {
                round_trip(Op::Session(id, SessionOp::Recv(h)));
                round_trip(Op::Session(id, SessionOp::Hup(h)));
                round_trip(Op::Session(id, SessionOp::Send(h, 0)));
                round_trip(Op::Session(id, SessionOp::Send(h, 0xfffe)));
                round_trip(Op::Session(id, SessionOp::SendMsg(h, 0)));
                round_trip(Op::Session(id, SessionOp::SendMsg(h, u16::MAX)));
            }
        }
    }

    #[test]
    fn unknown_values_decode_to_none() {
        assert_eq!(Op::decode(0), None);
        assert_eq!(Op::decode(0xf), None);
    }

    #[test]
    fn generation_wraps_inside_its_field() {
        let id = SessionId::new(5, GEN_MASK + 3);
        let v = Op::Session(id, SessionOp::Recv(Half::ClientToUpstream)).encode();
        assert!(matches!(
            Op::decode(v),
            Some(Op::Session(SessionId { key: 5, gen: 2 }, _))
        ));
    }
}
