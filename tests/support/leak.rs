//! Leak checks for fault tests: a baseline of this process's open fds and of the proxy's
//! table (sessions plus pool dials), buffer slots, ENOBUFS waiters and warm pool, and a
//! bounded wait for the return to it after each fault case.
//!
//! Fault tests run the proxy in this process, so fd counts are per process: a binary
//! that compares them runs one test at a time ([`serial`]).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{open_fds, TestProxy};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the binary's other fd-counting tests off while the caller runs (a failed test
/// poisons nothing: the next one still runs).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a quiet proxy holds: the figures that must come back after every fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    /// Open fds of this process (test clients, test upstreams and the proxy).
    pub fds: usize,
    /// `total.sessions_active`: table entries with a client.
    pub sessions_active: u64,
    /// `pool.dialing`: the other table entries (pool dials in flight).
    pub dialing: u64,
    pub slots_in_use: u64,
    pub waiters: u64,
    /// `pool.idle`: warm connections (each one fd here, one in the test upstream).
    pub idle: u64,
}

impl Baseline {
    /// The figures now (no waiting).
    pub fn now(proxy: &TestProxy) -> Baseline {
        let s = proxy.stats();
        Baseline {
            fds: open_fds(),
            sessions_active: s.total.sessions_active,
            dialing: s.pool.dialing,
            slots_in_use: s.total.buffer_slots_in_use,
            waiters: s.total.buffer_waiters,
            idle: s.pool.idle,
        }
    }

    /// Waits (up to 15 s) for the proxy to be quiet — no session, no dial, no slot held,
    /// and every figure unchanged for 500 ms — and records it.
    pub fn record(proxy: &TestProxy) -> Baseline {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = Baseline::now(proxy);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let b = Baseline::now(proxy);
            let quiet = b.sessions_active == 0 && b.dialing == 0 && b.slots_in_use == 0;
            if b != last || !quiet {
                last = b;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(500) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy never became quiet: {b:?}"
            );
        }
    }

    /// Waits (up to 15 s: test upstreams close their sockets a little late, the pool
    /// refills) for every figure to be back at the baseline; panics with both otherwise.
    pub fn assert_back(&self, proxy: &TestProxy, case: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = Baseline::now(proxy);
            if now == *self {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: not back to the baseline\n  baseline {self:?}\n  now      {now:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
