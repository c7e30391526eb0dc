//! Choosing the data plane once, at start: probe io_uring, plan the locked memory its
//! rings and buffers need against `RLIMIT_MEMLOCK`, step down (registered slots →
//! unregistered slots → a smaller provided ring → epoll) and say which one runs and why.

use std::fmt;

use super::uring;
use crate::error::ProxyError;

/// The data plane a worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPlane {
    #[default]
    IoUring,
    Epoll,
}

impl DataPlane {
    pub fn name(self) -> &'static str {
        match self {
            DataPlane::IoUring => "io_uring",
            DataPlane::Epoll => "epoll",
        }
    }
}

impl fmt::Display for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `data_plane` key (and `--data-plane`, `SSSONECTOR_DATA_PLANE`): which data plane
/// runs the workers. `auto` prefers io_uring and falls back to epoll with a warning that
/// names the cause; `io_uring` refuses to start without it.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataPlaneSetting {
    #[default]
    Auto,
    IoUring,
    Epoll,
}

impl DataPlaneSetting {
    pub(crate) const CHOICES: [(&'static str, DataPlaneSetting); 3] = [
        ("auto", DataPlaneSetting::Auto),
        ("io_uring", DataPlaneSetting::IoUring),
        ("epoll", DataPlaneSetting::Epoll),
    ];

    /// The environment variable that overrides the file's `data_plane` (a flag overrides both).
    pub const ENV: &'static str = "SSSONECTOR_DATA_PLANE";

    pub fn name(self) -> &'static str {
        match self {
            DataPlaneSetting::Auto => "auto",
            DataPlaneSetting::IoUring => "io_uring",
            DataPlaneSetting::Epoll => "epoll",
        }
    }
}

impl std::str::FromStr for DataPlaneSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DataPlaneSetting::CHOICES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("`{s}` is not a data plane; use auto, io_uring or epoll"))
    }
}

/// What every worker sets up: decided once, before any worker starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub data_plane: DataPlane,
    /// io_uring: how each worker's ring and buffers are set up.
    pub uring: Option<UringSetup>,
    /// One line: the data plane and how it is set up.
    pub detail: String,
    /// Why the data plane or its setup is less than the best, and how to fix it.
    pub fallback: Option<String>,
}

impl Plan {
    /// The start-up log line's text.
    pub fn summary(&self) -> String {
        format!("data plane: {} ({})", self.data_plane, self.detail)
    }
}

/// One worker's io_uring: its submission queue, its provided-buffer ring, and whether
/// its slots are registered as fixed buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringSetup {
    pub sq_entries: u32,
    pub ring_entries: usize,
    pub fixed: bool,
}

/// Submission queue entries per worker ring, when memory allows.
pub const RING_ENTRIES: u32 = 4096;
/// The smallest submission queue worth running; the worker's backlog holds what waits.
const MIN_SQ_ENTRIES: u32 = 64;
const PAGE: u64 = 4096;
/// What the start-up probe charges: an 8-entry ring (two pages) and a one-entry
/// provided ring (one page).
const PROBE_CHARGE: u64 = 3 * PAGE;
/// The smallest provided ring: one page of entries.
const MIN_RING_ENTRIES: usize = (PAGE / 16) as usize;

/// The locked-memory budget io_uring's rings and pinned pages are charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    /// `RLIMIT_MEMLOCK` is infinite or the process has `CAP_IPC_LOCK`.
    Unlimited,
    Bytes(u64),
}

impl Memlock {
    pub fn current() -> Memlock {
        if super::sys::has_cap_ipc_lock() {
            return Memlock::Unlimited;
        }
        match super::sys::memlock_limit() {
            Some(n) => Memlock::Bytes(n),
            None => Memlock::Unlimited,
        }
    }

    fn allows(self, bytes: u64) -> bool {
        match self {
            Memlock::Unlimited => true,
            Memlock::Bytes(limit) => bytes <= limit,
        }
    }
}

impl fmt::Display for Memlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Memlock::Unlimited => f.write_str("unlimited"),
            Memlock::Bytes(n) => write!(f, "{n} bytes"),
        }
    }
}

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

/// What one worker's io_uring charges to `RLIMIT_MEMLOCK` (measured on Linux 6.18: the
/// rings are charged there, not only to the memory cgroup): its submission entries (64
/// bytes each), its completion ring (four per submission entry, 16 bytes each, with
/// the submission index array and the ring header), its provided ring (16 bytes per
/// entry), and with `fixed` every slot.
pub fn charged_per_worker(setup: UringSetup, slots: usize, slot_size: usize) -> u64 {
    let sq = u64::from(setup.sq_entries);
    let sqes = pages(sq * 64);
    let rings = pages(sq * 4 * 16 + sq * 4 + 512);
    let provided = pages(setup.ring_entries as u64 * 16);
    let fixed = if setup.fixed {
        pages(slots as u64 * slot_size as u64)
    } else {
        0
    };
    sqes + rings + provided + fixed
}

/// The best io_uring setup `memlock` allows `workers` workers, or `None` when not even
/// the smallest fits. Steps, best first: everything registered; slots unregistered;
/// then a smaller provided ring and submission queue (free slots beyond the ring wait
/// in the registry and move in as the kernel takes slots out).
pub fn memlock_step(
    memlock: Memlock,
    workers: usize,
    slots: usize,
    slot_size: usize,
) -> Option<UringSetup> {
    let w = workers.max(1) as u64;
    // A page of room per worker beyond the model, which is exact for the rings alone.
    let fits = |s: UringSetup| memlock.allows(w * (charged_per_worker(s, slots, slot_size) + PAGE));
    let full_ring = slots.next_power_of_two().max(1);
    let full = UringSetup {
        sq_entries: RING_ENTRIES,
        ring_entries: full_ring,
        fixed: true,
    };
    if fits(full) {
        return Some(full);
    }
    let unregistered = UringSetup {
        fixed: false,
        ..full
    };
    if fits(unregistered) {
        return Some(unregistered);
    }
    let mut s = UringSetup {
        sq_entries: MIN_SQ_ENTRIES,
        ring_entries: full_ring.min(MIN_RING_ENTRIES),
        fixed: false,
    };
    if !fits(s) {
        return None;
    }
    // The provided ring first (every receive needs a slot in it), then the queue.
    while s.ring_entries < full_ring
        && fits(UringSetup {
            ring_entries: s.ring_entries * 2,
            ..s
        })
    {
        s.ring_entries *= 2;
    }
    while s.sq_entries < RING_ENTRIES
        && fits(UringSetup {
            sq_entries: s.sq_entries * 2,
            ..s
        })
    {
        s.sq_entries *= 2;
    }
    Some(s)
}

/// Decides the data plane for `workers` workers of `slots` slots of `slot_size` bytes.
/// An explicit `io_uring` that cannot run is an error; `auto` falls back to epoll.
pub fn plan(
    setting: DataPlaneSetting,
    workers: usize,
    slots: usize,
    slot_size: usize,
) -> Result<Plan, ProxyError> {
    let epoll = |fallback: Option<String>| Plan {
        data_plane: DataPlane::Epoll,
        uring: None,
        detail: "readiness with non-blocking syscalls, plain buffers".into(),
        fallback,
    };
    if setting == DataPlaneSetting::Epoll {
        return Ok(epoll(None));
    }
    let refused = |why: String| -> Result<Plan, ProxyError> {
        if setting == DataPlaneSetting::IoUring {
            Err(ProxyError::UringUnavailable(why))
        } else {
            Ok(epoll(Some(format!(
                "io_uring is unavailable, so the epoll data plane runs instead. Cause: {why}"
            ))))
        }
    };
    let memlock = Memlock::current();
    let fix = "raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, Docker `--ulimit memlock=-1`, \
               systemd `LimitMEMLOCK=infinity`) or grant CAP_IPC_LOCK";
    let best = UringSetup {
        sq_entries: RING_ENTRIES,
        ring_entries: slots.next_power_of_two().max(1),
        fixed: true,
    };
    let needed = workers as u64 * charged_per_worker(best, slots, slot_size);
    // The probe's ring is freed by the kernel in the background: its charge may still
    // count when the workers set up theirs, so the plan leaves room for it.
    let budget = match memlock {
        Memlock::Bytes(n) => Memlock::Bytes(n.saturating_sub(PROBE_CHARGE)),
        unlimited => unlimited,
    };
    let Some(setup) = memlock_step(budget, workers, slots, slot_size) else {
        let smallest = UringSetup {
            sq_entries: MIN_SQ_ENTRIES,
            ring_entries: MIN_RING_ENTRIES.min(best.ring_entries),
            fixed: false,
        };
        return refused(format!(
            "the locked-memory limit (RLIMIT_MEMLOCK) is {memlock}, less than the {} bytes \
             {workers} workers need for the smallest rings ({needed} bytes for the full \
             setup). Fix: {fix}",
            workers as u64 * (charged_per_worker(smallest, slots, slot_size) + PAGE) + PROBE_CHARGE
        ));
    };
    if let Err(e) = uring::probe_kernel() {
        return refused(e);
    }
    let detail = format!(
        "{slots} {} buffers of {slot_size} bytes per worker, provided ring of {}, \
         submission queue of {}",
        if setup.fixed {
            "registered"
        } else {
            "unregistered"
        },
        setup.ring_entries,
        setup.sq_entries
    );
    let fallback = (setup != best).then(|| {
        let mut less = vec!["unregistered buffers and plain sends".to_string()];
        if setup.ring_entries < best.ring_entries {
            less.push(format!(
                "a provided ring of {} entries for {slots} slots",
                setup.ring_entries
            ));
        }
        if setup.sq_entries < best.sq_entries {
            less.push(format!(
                "a submission queue of {} (not {})",
                setup.sq_entries, best.sq_entries
            ));
        }
        format!(
            "the locked-memory limit (RLIMIT_MEMLOCK) is {memlock}; the full io_uring setup \
             needs {needed} bytes for {workers} workers: running io_uring with {}. Fix: {fix}",
            less.join(", ")
        )
    });
    Ok(Plan {
        data_plane: DataPlane::IoUring,
        uring: Some(setup),
        detail,
        fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn setup(sq_entries: u32, ring_entries: usize, fixed: bool) -> UringSetup {
        UringSetup {
            sq_entries,
            ring_entries,
            fixed,
        }
    }

    #[test]
    fn the_charge_matches_what_the_kernel_refused() {
        // `benches/memlock-charge.py`, here (uid without CAP_IPC_LOCK, Linux 6.18): the
        // smallest RLIMIT_MEMLOCK that let io_uring_setup make a ring of n entries (CQ 4n).
        let measured = [
            (8, 8),
            (64, 12),
            (128, 20),
            (256, 36),
            (512, 68),
            (1024, 136),
            (4096, 532),
        ];
        for (n, kib) in measured {
            let rings = charged_per_worker(setup(n, 0, false), 0, 0);
            assert_eq!(rings, kib * 1024, "{n} entries");
        }
    }

    #[test]
    fn memlock_steps_go_down_in_order() {
        // 500 slots of 16 KiB.
        let step = |limit| memlock_step(limit, 2, 500, 16384);
        assert_eq!(step(Memlock::Unlimited), Some(setup(4096, 512, true)));
        assert_eq!(step(Memlock::Bytes(64 * MB)), Some(setup(4096, 512, true)));
        // Enough for the full rings, not for the buffers.
        assert_eq!(step(Memlock::Bytes(2 * MB)), Some(setup(4096, 512, false)));
        // Docker's 64 KiB over 2 workers: smaller rings.
        let small = step(Memlock::Bytes(65536)).expect("a small setup");
        assert!(!small.fixed && small.sq_entries < 4096, "{small:?}");
        assert!(2 * charged_per_worker(small, 500, 16384) <= 65536);
        // Less than two smallest setups: none.
        assert_eq!(step(Memlock::Bytes(16384)), None);
    }

    #[test]
    fn explicit_epoll_needs_no_probe() {
        let plan = plan(DataPlaneSetting::Epoll, 2, 100, 4096).expect("plan");
        assert_eq!(plan.data_plane, DataPlane::Epoll);
        assert!(plan.summary().starts_with("data plane: epoll"));
        assert_eq!(plan.fallback, None);
    }
}
