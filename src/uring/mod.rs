//! Ring setup, the kernel feature probe, and the `user_data` encoding of every submitted op.

use std::io;

use io_uring::{opcode, IoUring, Probe};

use crate::error::ProxyError;

mod ring;
pub mod sys;
pub use ring::{classify_enter_error, Entered, RawSockAddr, Ring, SendOp, MAX_IOV};

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

/// How the ring was set up, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFlavor {
    DeferTaskrun,
    CoopTaskrun,
    Plain,
}

/// Builds one worker's ring: `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has it
/// (6.1+), else `COOP_TASKRUN`, else a plain ring. Rings are charged to the locked-memory
/// limit; on ENOMEM the ring is halved (down to 64 entries) before giving up.
pub fn build_ring(entries: u32) -> Result<(IoUring, RingFlavor), ProxyError> {
    let mut entries = entries;
    loop {
        match build_ring_of(entries) {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && entries > 64 => {
                entries /= 2;
                tracing::debug!(entries, "io_uring_setup: ENOMEM, trying a smaller ring");
            }
            Err(e) => return Err(unavailable(e)),
            Ok((ring, flavor)) => {
                if entries < 1024 {
                    tracing::warn!(entries, "the locked-memory limit allows only a small io_uring; raise RLIMIT_MEMLOCK for full speed");
                }
                return Ok((ring, flavor));
            }
        }
    }
}

fn build_ring_of(entries: u32) -> io::Result<(IoUring, RingFlavor)> {
    let cq = entries.saturating_mul(4);
    type Setup = fn(&mut io_uring::Builder);
    let attempts: [(RingFlavor, Setup); 3] = [
        (RingFlavor::DeferTaskrun, |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        (RingFlavor::CoopTaskrun, |b| {
            b.setup_coop_taskrun();
        }),
        (RingFlavor::Plain, |_| {}),
    ];
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for (flavor, apply) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_submit_all();
        apply(&mut builder);
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, flavor)),
            // EINVAL: this kernel does not know the flag; try the next flavour.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Turns a ring setup failure into one sentence that says why and how to fix it.
fn unavailable(e: io::Error) -> ProxyError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (ENOSYS); run on Linux >= 6.1 built with CONFIG_IO_URING".to_string(),
        Some(libc::EPERM) if disabled > 0 => format!(
            "kernel.io_uring_disabled is {disabled} (EPERM); set it to 0 with `sysctl -w kernel.io_uring_disabled=0`"
        ),
        Some(libc::EPERM) => "io_uring_setup was refused (EPERM), most likely by a seccomp profile (Docker's default refuses it); allow io_uring_setup, io_uring_enter and io_uring_register in the profile".to_string(),
        Some(libc::ENOMEM) => "io_uring_setup ran out of memory (ENOMEM); raise the memlock limit (`ulimit -l unlimited`, Docker `--ulimit memlock=-1`)".to_string(),
        _ => format!("io_uring_setup failed: {e}"),
    };
    ProxyError::UringUnavailable(why)
}

/// Checks that the kernel has every opcode the data plane submits.
pub fn probe(ring: &IoUring) -> Result<(), ProxyError> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        ProxyError::UringUnavailable(format!(
            "the kernel cannot describe its io_uring opcodes ({e}); Linux >= 6.1 is required"
        ))
    })?;
    let needed = [
        ("ACCEPT", opcode::AcceptMulti::CODE),
        ("CONNECT", opcode::Connect::CODE),
        ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
        ("TIMEOUT", opcode::Timeout::CODE),
        ("RECV", opcode::Recv::CODE),
        ("SEND", opcode::Send::CODE),
        ("SEND_ZC", opcode::SendZc::CODE),
        ("WRITE_FIXED", opcode::WriteFixed::CODE),
        ("READ", opcode::Read::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ("POLL_ADD", opcode::PollAdd::CODE),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProxyError::UringUnavailable(format!(
            "the kernel lacks io_uring opcodes {}; Linux >= 6.1 is required",
            missing.join(", ")
        )))
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
    fn unavailable_says_why_and_how_to_fix_it() {
        let msg = |errno| unavailable(io::Error::from_raw_os_error(errno)).to_string();
        assert!(msg(libc::ENOSYS).contains("ENOSYS"));
        assert!(msg(libc::ENOSYS).contains("Linux >= 6.1"));
        let eperm = msg(libc::EPERM);
        assert!(eperm.contains("EPERM"), "{eperm}");
        assert!(
            eperm.contains("io_uring_disabled") || eperm.contains("seccomp"),
            "{eperm}"
        );
        assert!(msg(libc::ENOMEM).contains("memlock"));
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
