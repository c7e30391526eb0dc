//! Counters each worker keeps as plain integers and publishes to shared atomics once per tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// What one worker counts on its hot path; plain integers, owned by the worker thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCounters {
    pub sessions_total: u64,
    pub sessions_active: u64,
    pub bytes_client_to_upstream: u64,
    pub bytes_upstream_to_client: u64,
    pub buffer_slots_total: u64,
    pub buffer_slots_in_use: u64,
    pub buffer_slots_in_use_max: u64,
    pub buffer_allocations: u64,
    pub buffer_waits: u64,
    pub upstream_connect_errors: u64,
    pub upstream_connect_timeouts: u64,
    pub client_errors: u64,
    pub upstream_errors: u64,
}

/// The shared copy of one worker's counters, written only by that worker at publish time.
#[derive(Debug, Default)]
pub struct PublishedCounters {
    values: [AtomicU64; 13],
    pub registered: AtomicBool,
}

macro_rules! fields {
    ($m:ident) => {
        $m!(
            0 sessions_total,
            1 sessions_active,
            2 bytes_client_to_upstream,
            3 bytes_upstream_to_client,
            4 buffer_slots_total,
            5 buffer_slots_in_use,
            6 buffer_slots_in_use_max,
            7 buffer_allocations,
            8 buffer_waits,
            9 upstream_connect_errors,
            10 upstream_connect_timeouts,
            11 client_errors,
            12 upstream_errors
        )
    };
}

impl PublishedCounters {
    pub fn publish(&self, c: &WorkerCounters) {
        macro_rules! store {
            ($($i:literal $f:ident),*) => { $( self.values[$i].store(c.$f, Relaxed); )* };
        }
        fields!(store);
    }

    pub fn load(&self) -> WorkerCounters {
        let mut c = WorkerCounters::default();
        macro_rules! load {
            ($($i:literal $f:ident),*) => { $( c.$f = self.values[$i].load(Relaxed); )* };
        }
        fields!(load);
        c
    }
}

/// All workers' counters added up, plus the per-worker values.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub total: WorkerCounters,
    pub per_worker: Vec<WorkerCounters>,
    /// Whether every worker's buffer region is registered as fixed buffers.
    pub buffers_registered: bool,
}

impl StatsSnapshot {
    pub fn collect(workers: &[std::sync::Arc<PublishedCounters>]) -> StatsSnapshot {
        let per_worker: Vec<WorkerCounters> = workers.iter().map(|w| w.load()).collect();
        let mut total = WorkerCounters::default();
        for c in &per_worker {
            macro_rules! add {
                ($($i:literal $f:ident),*) => { $( total.$f += c.$f; )* };
            }
            fields!(add);
        }
        StatsSnapshot {
            total,
            per_worker,
            buffers_registered: workers.iter().all(|w| w.registered.load(Relaxed)),
        }
    }
}
