//! Upstream endpoints: the shared health table, balancing, and the warm pool with its keeper.

pub(crate) mod keeper;
mod pool;

pub use pool::{close_unused, Discard, IdleConn, PoolStats, Reconfigure, WarmPool, MAX_POOL_DIALS};

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use crate::config::Balance;

/// Endpoint ids ever created, across reloads: a reload that would need more is refused
/// (the per-worker tables indexed by id only grow).
pub const MAX_ENDPOINTS: usize = 1024;

/// One endpoint's shared state: written by the health prober (and by workers' dial
/// failures), read by every worker when it picks an endpoint or sweeps its pool.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    /// The listener whose upstream it is (config order).
    pub listener: usize,
    up: AtomicBool,
    /// A reload removed it from its listener: no new sessions, no pool; sessions already
    /// on it go on.
    retired: AtomicBool,
    /// Bumped on every up->down transition (and on retirement): a worker that sees a new
    /// value flushes the endpoint's idle pool.
    down_epoch: AtomicU64,
    consecutive_ok: AtomicU32,
    consecutive_fail: AtomicU32,
    /// Sessions using this endpoint, across workers (for `least_active`).
    pub active: AtomicUsize,
    pub probes_failed: AtomicU64,
    /// Dial attempts that failed, clients' and pool dials (not per packet: per dial).
    pub connect_errors: AtomicU64,
    /// [`crate::metrics::monotonic_ms`] of the last health probe plus one (0 = none yet).
    pub last_probe_ms: AtomicU64,
    pub last_probe_ok: AtomicBool,
}

impl EndpointState {
    const fn new(listener: usize, addr: SocketAddr) -> EndpointState {
        EndpointState {
            addr,
            listener,
            // Optimistic start: the pool warms at once; the first probes (or dial
            // failures) correct it.
            up: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            down_epoch: AtomicU64::new(0),
            consecutive_ok: AtomicU32::new(0),
            consecutive_fail: AtomicU32::new(0),
            active: AtomicUsize::new(0),
            probes_failed: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            last_probe_ms: AtomicU64::new(0),
            last_probe_ok: AtomicBool::new(false),
        }
    }
}

/// What `get` returns for an id that does not exist (never handed out by the table).
static NO_ENDPOINT: EndpointState = EndpointState::new(
    usize::MAX,
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
);

/// Every endpoint of every listener (the index is the endpoint id). Append-only: a
/// reload adds endpoints and retires others, so an id stays valid for the sessions and
/// per-worker tables that hold it, and readers need no lock.
#[derive(Debug)]
pub struct EndpointTable {
    slots: Box<[OnceLock<EndpointState>]>,
    len: AtomicUsize,
    /// Serialises appends.
    append: Mutex<()>,
    rise: AtomicU32,
    fall: AtomicU32,
}

/// What a health observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameUp,
}

impl EndpointTable {
    /// Endpoints of listener 0 (tests).
    pub fn new(addrs: &[SocketAddr], rise: u32, fall: u32) -> EndpointTable {
        EndpointTable::per_listener(&[addrs.to_vec()], rise, fall)
    }

    /// Each listener's endpoints, in order: listener 0's get the first ids.
    pub fn per_listener(listeners: &[Vec<SocketAddr>], rise: u32, fall: u32) -> EndpointTable {
        let t = EndpointTable {
            slots: (0..MAX_ENDPOINTS).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            append: Mutex::new(()),
            rise: AtomicU32::new(rise.max(1)),
            fall: AtomicU32::new(fall.max(1)),
        };
        for (l, addrs) in listeners.iter().enumerate() {
            for addr in addrs {
                if t.find(l, *addr).is_none() {
                    let _ = t.add(l, *addr);
                }
            }
        }
        t
    }

    pub fn len(&self) -> usize {
        self.len.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: usize) -> &EndpointState {
        self.slots
            .get(id)
            .and_then(OnceLock::get)
            .unwrap_or(&NO_ENDPOINT)
    }

    /// Healthy and not retired: it may get new sessions and a warm pool.
    pub fn is_up(&self, id: usize) -> bool {
        let e = self.get(id);
        e.up.load(Relaxed) && !e.retired.load(Relaxed)
    }

    pub fn is_retired(&self, id: usize) -> bool {
        self.get(id).retired.load(Relaxed)
    }

    pub fn down_epoch(&self, id: usize) -> u64 {
        self.get(id).down_epoch.load(Relaxed)
    }

    /// The id of `addr` as an endpoint of `listener`, retired or not.
    pub fn find(&self, listener: usize, addr: SocketAddr) -> Option<usize> {
        (0..self.len()).find(|&id| {
            let e = self.get(id);
            e.listener == listener && e.addr == addr
        })
    }

    /// Appends an endpoint; `None` when [`MAX_ENDPOINTS`] are used.
    pub fn add(&self, listener: usize, addr: SocketAddr) -> Option<usize> {
        let _guard = self.append.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.len();
        self.slots
            .get(id)?
            .set(EndpointState::new(listener, addr))
            .ok()?;
        self.len.store(id + 1, std::sync::atomic::Ordering::Release);
        Some(id)
    }

    /// Takes an endpoint out of service (a reload removed it): workers flush its idle
    /// pool, stop refilling it and give it no new session.
    pub fn retire(&self, id: usize) {
        let e = self.get(id);
        if !e.retired.swap(true, Relaxed) {
            e.down_epoch.fetch_add(1, Relaxed);
        }
    }

    /// Puts a retired endpoint back in service (a reload added it again).
    pub fn revive(&self, id: usize) {
        self.get(id).retired.store(false, Relaxed);
    }

    pub fn set_thresholds(&self, rise: u32, fall: u32) {
        self.rise.store(rise.max(1), Relaxed);
        self.fall.store(fall.max(1), Relaxed);
    }

    /// Health checks were turned off: nothing will mark an endpoint up again, so all are.
    pub fn mark_all_up(&self) {
        for id in 0..self.len() {
            let e = self.get(id);
            e.up.store(true, Relaxed);
            e.consecutive_fail.store(0, Relaxed);
        }
    }

    /// Records a probe (or dial) result; `fall` failures in a row mark an endpoint down,
    /// `rise` successes in a row mark it up again.
    pub fn observe(&self, id: usize, ok: bool) -> Transition {
        let e = self.get(id);
        if ok {
            e.consecutive_fail.store(0, Relaxed);
            let n = e.consecutive_ok.fetch_add(1, Relaxed) + 1;
            if n >= self.rise.load(Relaxed) && !e.up.swap(true, Relaxed) {
                return Transition::CameUp;
            }
        } else {
            e.consecutive_ok.store(0, Relaxed);
            let n = e.consecutive_fail.fetch_add(1, Relaxed) + 1;
            if n >= self.fall.load(Relaxed) && e.up.swap(false, Relaxed) {
                e.down_epoch.fetch_add(1, Relaxed);
                return Transition::WentDown;
            }
        }
        Transition::None
    }
}

/// Picks an endpoint for a new session among `candidates` (a listener's endpoints),
/// skipping those in `exclude` (already failed for this client): healthy ones first;
/// unless `healthy_only`, if none is healthy, any (a down mark may be stale, and a dial
/// that fails is retried).
pub fn pick(
    table: &EndpointTable,
    candidates: &[usize],
    policy: Balance,
    cursor: &mut usize,
    exclude: u64,
    healthy_only: bool,
) -> Option<usize> {
    // `exclude` holds positions in `candidates` (the first 64).
    let usable = |pos: usize, id: usize, healthy: bool| {
        let excluded = pos < 64 && exclude & (1u64 << pos) != 0;
        !excluded && (!healthy || table.is_up(id))
    };
    let passes: &[bool] = if healthy_only {
        &[true]
    } else {
        &[true, false]
    };
    for &healthy in passes {
        let n = candidates.len();
        match policy {
            Balance::RoundRobin => {
                for i in 0..n {
                    let pos = (*cursor + i) % n;
                    let id = candidates[pos];
                    if usable(pos, id, healthy) {
                        *cursor = (*cursor + i + 1) % n;
                        return Some(id);
                    }
                }
            }
            Balance::LeastActive => {
                let best = candidates
                    .iter()
                    .enumerate()
                    .filter(|&(pos, &id)| usable(pos, id, healthy))
                    .min_by_key(|&(_, &id)| table.get(id).active.load(Relaxed));
                if let Some((_, &id)) = best {
                    return Some(id);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> EndpointTable {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)))
            .collect();
        EndpointTable::new(&addrs, 2, 3)
    }

    #[test]
    fn fall_and_rise_thresholds() {
        let t = table(1);
        assert!(t.is_up(0));
        assert_eq!(t.observe(0, false), Transition::None);
        assert_eq!(t.observe(0, false), Transition::None);
        assert_eq!(t.observe(0, false), Transition::WentDown);
        assert!(!t.is_up(0));
        assert_eq!(t.down_epoch(0), 1);
        assert_eq!(t.observe(0, true), Transition::None);
        assert_eq!(
            t.observe(0, false),
            Transition::None,
            "a failure resets the rise count"
        );
        assert_eq!(t.observe(0, true), Transition::None);
        assert_eq!(t.observe(0, true), Transition::CameUp);
        assert!(t.is_up(0));
    }

    #[test]
    fn round_robin_skips_down_and_excluded_endpoints() {
        let t = table(3);
        let all = [0, 1, 2];
        let mut cur = 0;
        let got: Vec<_> = (0..4)
            .map(|_| pick(&t, &all, Balance::RoundRobin, &mut cur, 0, false))
            .collect();
        assert_eq!(got, [Some(0), Some(1), Some(2), Some(0)]);
        for _ in 0..3 {
            t.observe(1, false);
        }
        let got: Vec<_> = (0..3)
            .map(|_| pick(&t, &all, Balance::RoundRobin, &mut cur, 0, false))
            .collect();
        assert_eq!(got, [Some(2), Some(0), Some(2)]);
        assert_eq!(
            pick(&t, &all, Balance::RoundRobin, &mut cur, 0b101, false),
            Some(1),
            "only the down one is left"
        );
        assert_eq!(
            pick(&t, &all, Balance::RoundRobin, &mut cur, 0b101, true),
            None,
            "no healthy one left"
        );
        assert_eq!(
            pick(&t, &all, Balance::RoundRobin, &mut cur, 0b111, false),
            None
        );
    }

    /// With more than 64 endpoints, a failed one must not exclude the endpoint 64
    /// positions on (the old `id % 64` mask did), and a listener's positions, not global
    /// ids, are what the mask holds.
    #[test]
    fn more_than_64_endpoints_exclude_only_what_failed() {
        let t = table(130);
        // A second listener's endpoints: ids 65..130, positions 0..65.
        let second: Vec<usize> = (65..130).collect();
        let mut cur = 0;
        // Position 0 (id 65) failed: the next pick is position 1 (id 66), not skipping
        // id 65 + 64.
        assert_eq!(
            pick(&t, &second, Balance::RoundRobin, &mut cur, 0b1, true),
            Some(66)
        );
        // Every one of the first 64 positions failed: position 64 (id 129) is still usable.
        let mut cur = 0;
        assert_eq!(
            pick(&t, &second, Balance::RoundRobin, &mut cur, u64::MAX, true),
            Some(129)
        );
        for id in 66..130 {
            t.get(id).active.store(10, Relaxed);
        }
        assert_eq!(
            pick(&t, &second, Balance::LeastActive, &mut cur, 0b10, true),
            Some(65),
            "least_active excludes by position too"
        );
    }

    #[test]
    fn retired_endpoints_keep_their_id_and_are_not_up() {
        let t = table(2);
        let a = t.get(0).addr;
        t.retire(0);
        assert!(!t.is_up(0));
        assert_eq!(t.down_epoch(0), 1, "workers flush its pool");
        assert_eq!(t.find(0, a), Some(0));
        t.revive(0);
        assert!(t.is_up(0));
        let new = SocketAddr::from(([127, 0, 0, 1], 9));
        assert_eq!(t.add(0, new), Some(2));
        assert_eq!(t.find(0, new), Some(2));
        assert_eq!(t.find(1, new), None, "ids are per listener");
        assert_eq!(t.get(99).addr.port(), 0, "an unknown id is no endpoint");
    }

    #[test]
    fn least_active_prefers_the_idlest_healthy_endpoint() {
        let t = table(3);
        t.get(0).active.store(5, Relaxed);
        t.get(1).active.store(2, Relaxed);
        t.get(2).active.store(9, Relaxed);
        let mut cur = 0;
        assert_eq!(
            pick(&t, &[0, 1, 2], Balance::LeastActive, &mut cur, 0, false),
            Some(1)
        );
        for _ in 0..3 {
            t.observe(1, false);
        }
        assert_eq!(
            pick(&t, &[0, 1, 2], Balance::LeastActive, &mut cur, 0, false),
            Some(0)
        );
    }
}
