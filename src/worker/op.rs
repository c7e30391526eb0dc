//! The `user_data` of every op a worker submits: which entry (slab key and generation),
//! which op, which direction, and a slot or message id; encoded and decoded here only.

/// What one submitted op is, so its completion can be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Accept = 1,
    Connect,
    ConnectTimeout,
    Recv,
    Send,
    Cancel,
    Tick,
    Wake,
    /// A vectored send of several slots; the token's slot field is the message id.
    SendMsg,
    /// The wait before a client's next dial round.
    RetryTimer,
    /// A parked direction that holds no slot watches its source for a reset.
    Hup,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Accept,
            2 => OpKind::Connect,
            3 => OpKind::ConnectTimeout,
            4 => OpKind::Recv,
            5 => OpKind::Send,
            6 => OpKind::Cancel,
            7 => OpKind::Tick,
            8 => OpKind::Wake,
            9 => OpKind::SendMsg,
            10 => OpKind::RetryTimer,
            11 => OpKind::Hup,
            _ => return None,
        })
    }
}

/// The decoded `user_data` of an op: which connection (slab key and generation), which
/// op, which direction, and for sends the buffer slot it sends from.
///
/// Layout, from the low bits: op kind (4), direction (1), unused (3), slot (16),
/// generation (20), key (20). The generation lets a completion for a freed and reused
/// connection slot be recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub key: u32,
    pub gen: u32,
    pub op: OpKind,
    pub dir: u8,
    pub slot: u16,
}

pub const KEY_BITS: u32 = 20;
pub const GEN_MASK: u32 = (1 << 20) - 1;
/// Connection slots one worker can address.
pub const MAX_KEYS: usize = 1 << KEY_BITS;

impl Token {
    pub fn new(key: usize, gen: u32, op: OpKind) -> Token {
        Token {
            key: key as u32,
            gen: gen & GEN_MASK,
            op,
            dir: 0,
            slot: 0,
        }
    }

    pub fn dir(mut self, dir: usize) -> Token {
        self.dir = dir as u8;
        self
    }

    pub fn slot(mut self, slot: u16) -> Token {
        self.slot = slot;
        self
    }

    pub fn encode(self) -> u64 {
        (self.op as u64)
            | ((self.dir as u64 & 1) << 4)
            | ((self.slot as u64) << 8)
            | (((self.gen & GEN_MASK) as u64) << 24)
            | ((self.key as u64) << 44)
    }

    pub fn decode(v: u64) -> Option<Token> {
        Some(Token {
            op: OpKind::from_u8((v & 0xf) as u8)?,
            dir: ((v >> 4) & 1) as u8,
            slot: ((v >> 8) & 0xffff) as u16,
            gen: ((v >> 24) as u32) & GEN_MASK,
            key: (v >> 44) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = Token::new(MAX_KEYS - 1, 0xabcde, OpKind::Send)
            .dir(1)
            .slot(0xfffe);
        assert_eq!(Token::decode(t.encode()), Some(t));
        let t = Token::new(0, 1, OpKind::Accept);
        assert_eq!(Token::decode(t.encode()), Some(t));
        assert_eq!(Token::decode(0), None);
    }

    #[test]
    fn generation_wraps_inside_its_field() {
        let t = Token::new(5, GEN_MASK + 3, OpKind::Recv);
        assert_eq!(
            Token::decode(t.encode()).map(|t| (t.key, t.gen)),
            Some((5, 2))
        );
    }
}
