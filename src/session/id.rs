//! The typed names a worker uses instead of bare integers and flags: which session
//! ([`SessionId`]), which listener, which endpoint, which direction ([`Half`]), which
//! peer ([`Peer`]), how a session ends ([`Close`]) and what a handler decided ([`Next`]).

/// Bits of a session's slab key in an op's `user_data`.
pub const KEY_BITS: u32 = 20;
/// Generations wrap inside their 20 bits of `user_data`.
pub const GEN_MASK: u32 = (1 << 20) - 1;
/// Table entries one worker can address (the last key is never handed out).
pub const MAX_KEYS: usize = 1 << KEY_BITS;

/// One table entry (a session or a pool dial): its slab key and the generation that
/// tells it from an earlier entry at the same key, so a late completion for a freed
/// entry is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub key: u32,
    pub gen: u32,
}

impl SessionId {
    pub fn new(key: usize, gen: u32) -> SessionId {
        SessionId {
            key: key as u32,
            gen: gen & GEN_MASK,
        }
    }

    pub fn key(self) -> usize {
        self.key as usize
    }
}

/// A listener of this worker: its index in the config's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerId(pub u16);

impl ListenerId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// An upstream endpoint: its id in the shared endpoint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointId(pub u16);

impl EndpointId {
    /// A pool dial whose reservation was already given back.
    pub const NONE: EndpointId = EndpointId(u16::MAX);

    pub fn new(index: usize) -> EndpointId {
        EndpointId(index as u16)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One direction of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// Receives from the client, sends to the upstream.
    ClientToUpstream = 0,
    /// Receives from the upstream, sends to the client.
    UpstreamToClient = 1,
}

impl Half {
    pub const BOTH: [Half; 2] = [Half::ClientToUpstream, Half::UpstreamToClient];

    /// Its index in a session's `dirs`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The peer it receives from.
    pub fn source(self) -> Peer {
        match self {
            Half::ClientToUpstream => Peer::Client,
            Half::UpstreamToClient => Peer::Upstream,
        }
    }

    /// The peer it sends to.
    pub fn destination(self) -> Peer {
        match self {
            Half::ClientToUpstream => Peer::Upstream,
            Half::UpstreamToClient => Peer::Client,
        }
    }
}

/// One of a session's two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Client,
    Upstream,
}

impl Peer {
    /// The half that sends to this peer.
    pub fn inbound(self) -> Half {
        match self {
            Peer::Client => Half::UpstreamToClient,
            Peer::Upstream => Half::ClientToUpstream,
        }
    }

    /// The half that receives from this peer.
    pub fn outbound(self) -> Half {
        match self {
            Peer::Client => Half::ClientToUpstream,
            Peer::Upstream => Half::UpstreamToClient,
        }
    }
}

/// What a relay handler decided for its session; [`crate::session::Context::apply`] does
/// it, once the handler is done with the session.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The session goes on (or was already gone, or is already closing).
    Continue,
    /// Tear it down: both halves passed their FIN, or a peer failed with nothing owed to
    /// the other.
    Close(Close),
}

/// How a session's sockets are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close: a FIN after whatever was sent.
    Fin,
    /// An RST (`SO_LINGER` 0): a peer reset, an error, or a peer that stopped reading.
    Reset,
}
