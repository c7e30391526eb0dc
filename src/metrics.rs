//! Counters each worker keeps as plain integers and publishes to shared atomics once per
//! tick (no shared write per packet), and the snapshot the handle sums them into.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// What one worker counts; plain integers owned by the worker thread. Gauges are
        /// marked as such, the rest only grow.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct WorkerCounters {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        const FIELDS: usize = [$(stringify!($name)),*].len();

        impl WorkerCounters {
            fn to_array(self) -> [u64; FIELDS] {
                [$(self.$name),*]
            }

            fn from_array(a: [u64; FIELDS]) -> WorkerCounters {
                let mut it = a.into_iter();
                WorkerCounters { $($name: it.next().unwrap_or(0),)* }
            }

            /// Adds `other` field by field.
            pub fn add(&mut self, other: &WorkerCounters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Sessions accepted (clients).
    sessions_total,
    /// Gauge: sessions with a client, in any state.
    sessions_active,
    bytes_client_to_upstream,
    bytes_upstream_to_client,
    /// Gauge: slots in this worker's registry.
    buffer_slots_total,
    /// Gauge: slots held (received, not yet sent).
    buffer_slots_in_use,
    /// High-water mark of `buffer_slots_in_use`.
    buffer_slots_in_use_max,
    buffer_allocations,
    /// Receives that found the pool empty (ENOBUFS) and waited.
    buffer_waits,
    /// Upstream dial attempts that failed (each attempt, pool dials included).
    upstream_connect_errors,
    /// Upstream dial attempts that timed out.
    upstream_connect_timeouts,
    client_errors,
    upstream_errors,
    /// Sessions paired with a warm connection.
    pool_hits,
    /// Sessions that dialed because no warm connection was there.
    pool_misses,
    /// Dials made to fill the pool.
    pool_dials,
    /// Dial retries for clients.
    connect_retries,
    /// Clients closed because every dial attempt failed.
    connection_failures,
    /// Clients that had to wait for admission.
    queued_total,
    /// Waiting clients closed after `queue_timeout`.
    queue_timeouts,
    /// Clients closed because the admission queue was full.
    queue_rejected,
    /// Total wait of admitted clients that queued, in ms.
    queue_wait_ms,
    /// Sessions closed after `idle_timeout` without traffic.
    session_timeouts,
    /// Completions the kernel dropped (io_uring_enter returned EBADR).
    completions_dropped,
    /// Gauge: entries on the worker's ENOBUFS wait list.
    buffer_waiters,
    /// Accepts that failed (EMFILE, ENFILE, ENOMEM...).
    accept_errors,
}

/// The shared copy of one worker's counters, written only by that worker at publish time.
#[derive(Debug, Default)]
pub struct PublishedCounters {
    values: [AtomicU64; FIELDS],
    pub registered: AtomicBool,
}

impl PublishedCounters {
    pub fn publish(&self, c: &WorkerCounters) {
        for (slot, v) in self.values.iter().zip(c.to_array()) {
            slot.store(v, Relaxed);
        }
    }

    pub fn load(&self) -> WorkerCounters {
        let mut a = [0u64; FIELDS];
        for (v, slot) in a.iter_mut().zip(&self.values) {
            *v = slot.load(Relaxed);
        }
        WorkerCounters::from_array(a)
    }
}

/// One endpoint as the workers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSnapshot {
    pub addr: SocketAddr,
    pub up: bool,
    /// Sessions using it now, across workers.
    pub active: u64,
    pub probes_failed: u64,
}

/// All workers' counters added up, plus the per-worker values and the shared state.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub total: WorkerCounters,
    pub per_worker: Vec<WorkerCounters>,
    /// Whether every worker's buffer region is registered as fixed buffers.
    pub buffers_registered: bool,
    /// Sessions holding one of the `max_active` slots.
    pub admitted: u64,
    /// Clients waiting for admission now.
    pub queued: u64,
    pub endpoints: Vec<EndpointSnapshot>,
    /// The warm pool (shared by the workers): idle connections and discards by reason.
    pub pool: crate::upstream::PoolStats,
}

impl StatsSnapshot {
    pub fn collect(workers: &[std::sync::Arc<PublishedCounters>]) -> StatsSnapshot {
        let per_worker: Vec<WorkerCounters> = workers.iter().map(|w| w.load()).collect();
        let mut total = WorkerCounters::default();
        for c in &per_worker {
            total.add(c);
        }
        StatsSnapshot {
            total,
            per_worker,
            buffers_registered: workers.iter().all(|w| w.registered.load(Relaxed)),
            ..StatsSnapshot::default()
        }
    }
}
