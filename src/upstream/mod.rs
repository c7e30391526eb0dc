//! Upstream endpoints: the shared health table, balancing, and each worker's warm pool.

mod pool;

pub use pool::{IdleConn, WarmPool};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::config::Balance;

/// One endpoint's shared state: written by the health prober (and by workers' dial
/// failures), read by every worker when it picks an endpoint or sweeps its pool.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    up: AtomicBool,
    /// Bumped on every up->down transition: a worker that sees a new value flushes the
    /// endpoint's idle pool.
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

/// Every endpoint of every listener, in worker order (the index is the endpoint id).
#[derive(Debug)]
pub struct EndpointTable {
    endpoints: Vec<EndpointState>,
    rise: u32,
    fall: u32,
}

/// What a health observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    CameUp,
}

impl EndpointTable {
    pub fn new(addrs: &[SocketAddr], rise: u32, fall: u32) -> EndpointTable {
        EndpointTable {
            endpoints: addrs
                .iter()
                .map(|&addr| EndpointState {
                    addr,
                    // Optimistic start: the pool warms at once; the first probes (or
                    // dial failures) correct it.
                    up: AtomicBool::new(true),
                    down_epoch: AtomicU64::new(0),
                    consecutive_ok: AtomicU32::new(0),
                    consecutive_fail: AtomicU32::new(0),
                    active: AtomicUsize::new(0),
                    probes_failed: AtomicU64::new(0),
                    connect_errors: AtomicU64::new(0),
                    last_probe_ms: AtomicU64::new(0),
                    last_probe_ok: AtomicBool::new(false),
                })
                .collect(),
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn get(&self, id: usize) -> &EndpointState {
        &self.endpoints[id]
    }

    pub fn is_up(&self, id: usize) -> bool {
        self.endpoints[id].up.load(Relaxed)
    }

    pub fn down_epoch(&self, id: usize) -> u64 {
        self.endpoints[id].down_epoch.load(Relaxed)
    }

    /// Records a probe (or dial) result; `fall` failures in a row mark an endpoint down,
    /// `rise` successes in a row mark it up again.
    pub fn observe(&self, id: usize, ok: bool) -> Transition {
        let e = &self.endpoints[id];
        if ok {
            e.consecutive_fail.store(0, Relaxed);
            let n = e.consecutive_ok.fetch_add(1, Relaxed) + 1;
            if n >= self.rise && !e.up.swap(true, Relaxed) {
                return Transition::CameUp;
            }
        } else {
            e.consecutive_ok.store(0, Relaxed);
            let n = e.consecutive_fail.fetch_add(1, Relaxed) + 1;
            if n >= self.fall && e.up.swap(false, Relaxed) {
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
    let usable = |id: &usize, healthy: bool| {
        let bit = 1u64 << (*id % 64);
        exclude & bit == 0 && (!healthy || table.is_up(*id))
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
                    let id = candidates[(*cursor + i) % n];
                    if usable(&id, healthy) {
                        *cursor = (*cursor + i + 1) % n;
                        return Some(id);
                    }
                }
            }
            Balance::LeastActive => {
                let best = candidates
                    .iter()
                    .filter(|id| usable(id, healthy))
                    .min_by_key(|id| table.get(**id).active.load(Relaxed));
                if let Some(&id) = best {
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
