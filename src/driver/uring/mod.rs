//! The io_uring driver: ring setup, the kernel feature probe, and [`Ring`], which
//! implements [`super::Driver`].

use std::io;

use io_uring::{opcode, IoUring, Probe};

use crate::error::ProxyError;

mod ring;
pub(crate) use ring::Ring;

/// How the ring was set up, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFlavor {
    DeferTaskrun,
    CoopTaskrun,
    Plain,
}

/// Builds one worker's ring: `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has it
/// (6.1+), else `COOP_TASKRUN`, else a plain ring. Rings are charged to the locked-memory
/// limit, and the plan ([`crate::driver::select`]) sized it to fit; should another process
/// of this user hold part of the limit (ENOMEM), the ring is halved (down to 64 entries)
/// before giving up.
pub fn build_ring(planned: u32) -> Result<(IoUring, RingFlavor), ProxyError> {
    let mut entries = planned;
    loop {
        match build_ring_of(entries) {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && entries > 64 => {
                entries /= 2;
                tracing::debug!(entries, "io_uring_setup: ENOMEM, trying a smaller ring");
            }
            Err(e) => return Err(unavailable(e)),
            Ok((ring, flavor)) => {
                if entries < planned {
                    // The plan fitted the limit; something else of this user holds part
                    // of it (RLIMIT_MEMLOCK is charged per user, across processes).
                    tracing::warn!(
                        planned,
                        entries,
                        "io_uring_setup: the locked-memory limit is partly used elsewhere; \
                         running a smaller submission queue"
                    );
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

/// Checks once, at start, that this process may use io_uring with every opcode and
/// feature the data plane needs: a small ring, its opcode probe, and a provided-buffer
/// ring of one entry. Says why not, in one sentence with the fix.
pub fn probe_kernel() -> Result<(), String> {
    // On a thread of its own: a ring's teardown may notify the task that made it
    // (task work), which interrupts that thread's next blocking call with EINTR; the
    // caller of `start` (a test, an embedding program) must not get that.
    std::thread::Builder::new()
        .name("sssonector-probe".into())
        .spawn(probe_here)
        .map_err(|e| format!("cannot spawn the io_uring probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()))
}

fn probe_here() -> Result<(), String> {
    let (ring, _) = build_ring_of(8).map_err(why_unavailable)?;
    probe_opcodes(&ring)?;
    let map = crate::buffer::probe_buf_ring(&ring.submitter());
    map.map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => {
            format!("the kernel has no provided-buffer rings ({e}); Linux >= 5.19 is required")
        }
        Some(libc::EPERM) => format!(
            "io_uring_register was refused ({e}), most likely by a seccomp profile; allow \
             io_uring_setup, io_uring_enter and io_uring_register in the profile"
        ),
        Some(libc::ENOMEM) => format!(
            "cannot pin one page for a provided-buffer ring ({e}): the locked-memory limit \
             (RLIMIT_MEMLOCK) is {}; raise it or grant CAP_IPC_LOCK",
            super::select::Memlock::current()
        ),
        _ => format!("cannot register a provided-buffer ring: {e}"),
    })
}

/// Turns a ring setup failure into one sentence that says why and how to fix it.
fn unavailable(e: io::Error) -> ProxyError {
    ProxyError::UringUnavailable(why_unavailable(e))
}

fn why_unavailable(e: io::Error) -> String {
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
    why
}

/// Checks that the kernel has every opcode the data plane submits.
fn probe_opcodes(ring: &IoUring) -> Result<(), String> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "io_uring_register was refused ({e}), most likely by a seccomp profile; allow \
             io_uring_setup, io_uring_enter and io_uring_register in the profile"
            ),
            _ => format!(
                "the kernel cannot describe its io_uring opcodes ({e}); Linux >= 6.1 is required"
            ),
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
        Err(format!(
            "the kernel lacks io_uring opcodes {}; Linux >= 6.1 is required",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
