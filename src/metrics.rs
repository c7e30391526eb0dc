//! Counters each worker keeps as plain integers and publishes to shared atomics once per
//! tick (no shared write per packet), and the snapshot the handle sums them into. How
//! they are named and described for Prometheus is in [`crate::telemetry`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

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
    /// Bytes received from clients, all endpoints (summed from the per-endpoint counts
    /// at publish).
    bytes_client_to_upstream,
    /// Bytes received from upstreams, all endpoints (summed likewise).
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
    /// Sessions closed after `session.idle_timeout` without traffic.
    session_timeouts,
    /// Sessions closed after `session.send_timeout` without their peer taking a byte
    /// while data waited for it.
    send_timeouts,
    /// Completions the kernel dropped (io_uring_enter returned EBADR).
    completions_dropped,
    /// Gauge: entries on the worker's ENOBUFS wait list.
    buffer_waiters,
    /// Accepts that failed (EMFILE, ENFILE, ENOMEM...).
    accept_errors,
    /// Client sessions freed, whatever the reason (the reasons are counted above).
    sessions_closed,
}

/// Milliseconds since the first call in this process: the clock of worker heartbeats.
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Upper bounds (ms) of the connect-latency and queue-wait buckets (+Inf is implicit).
pub const LATENCY_BOUNDS_MS: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000];
/// Upper bounds (ms) of the session-duration buckets.
pub const DURATION_BOUNDS_MS: &[u64] = &[
    10, 100, 1000, 10_000, 60_000, 300_000, 1_800_000, 3_600_000, 86_400_000,
];

/// A histogram a worker keeps as plain integers: one count per bucket (not cumulative;
/// the last is +Inf) and the sum of the observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub bounds_ms: &'static [u64],
    pub counts: Vec<u64>,
    pub sum_ms: u64,
}

impl Histogram {
    pub fn new(bounds_ms: &'static [u64]) -> Histogram {
        Histogram {
            bounds_ms,
            counts: vec![0; bounds_ms.len() + 1],
            sum_ms: 0,
        }
    }

    pub fn record(&mut self, ms: u64) {
        let bucket = self.bounds_ms.partition_point(|&b| b < ms);
        self.counts[bucket] += 1;
        self.sum_ms += ms;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ms += other.sum_ms;
    }
}

/// Declares the histograms a worker keeps, so that one more is one line.
macro_rules! histograms {
    ($($(#[doc = $doc:literal])* $name:ident: $bounds:expr),* $(,)?) => {
        /// The histograms of one worker (or all workers added up).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct WorkerHistograms {
            $($(#[doc = $doc])* pub $name: Histogram,)*
        }

        impl Default for WorkerHistograms {
            fn default() -> Self {
                WorkerHistograms { $($name: Histogram::new($bounds),)* }
            }
        }

        impl WorkerHistograms {
            pub fn add(&mut self, other: &WorkerHistograms) {
                $(self.$name.add(&other.$name);)*
            }

            fn all(&self) -> Vec<&Histogram> {
                vec![$(&self.$name),*]
            }

            fn all_mut(&mut self) -> Vec<&mut Histogram> {
                vec![$(&mut self.$name),*]
            }
        }
    };
}

histograms! {
    /// From the start of an upstream dial to its completion (clients' and pool dials).
    connect_ms: LATENCY_BOUNDS_MS,
    /// How long admitted clients that queued waited for a `max_active` slot.
    queue_wait_ms: LATENCY_BOUNDS_MS,
    /// From a session's activation to its end.
    session_ms: DURATION_BOUNDS_MS,
}

/// What a worker counts per endpoint, as plain integers (idle pooled connections are
/// the shared pool's: [`crate::upstream::WarmPool::idle`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Sessions that started relaying to it.
    pub sessions: u64,
    /// Bytes received from clients for it (sent to it).
    pub bytes_to: u64,
    /// Bytes received from it (for its clients).
    pub bytes_from: u64,
}

impl EndpointCounters {
    fn to_array(self) -> [u64; 3] {
        [self.sessions, self.bytes_to, self.bytes_from]
    }

    fn add_array(&mut self, a: [u64; 3]) {
        self.sessions += a[0];
        self.bytes_to += a[1];
        self.bytes_from += a[2];
    }
}

/// The shared copy of one worker's counters, written only by that worker at publish time.
#[derive(Debug, Default)]
pub struct PublishedCounters {
    values: [AtomicU64; FIELDS],
    pub registered: AtomicBool,
    /// [`monotonic_ms`] at the last publish: a worker whose loop stopped turning stops
    /// beating (`/healthz`).
    heartbeat_ms: AtomicU64,
    /// The worker left its loop normally (a drain or stop): no heartbeat is expected.
    finished: AtomicBool,
    /// [`EndpointCounters`] of this worker, per endpoint id.
    endpoints: Vec<[AtomicU64; 3]>,
    /// Each histogram's bucket counts followed by its sum, in declaration order.
    histograms: Vec<AtomicU64>,
}

impl PublishedCounters {
    /// Room for `endpoints` per-endpoint values.
    pub fn new(endpoints: usize) -> PublishedCounters {
        let hist_len = WorkerHistograms::default()
            .all()
            .iter()
            .map(|h| h.counts.len() + 1)
            .sum();
        PublishedCounters {
            endpoints: (0..endpoints).map(|_| Default::default()).collect(),
            histograms: (0..hist_len).map(|_| AtomicU64::new(0)).collect(),
            heartbeat_ms: AtomicU64::new(monotonic_ms()),
            ..PublishedCounters::default()
        }
    }

    pub fn publish(&self, c: &WorkerCounters) {
        for (slot, v) in self.values.iter().zip(c.to_array()) {
            slot.store(v, Relaxed);
        }
        self.heartbeat_ms.store(monotonic_ms(), Relaxed);
    }

    pub fn publish_endpoint(&self, endpoint: usize, c: &EndpointCounters) {
        if let Some(slots) = self.endpoints.get(endpoint) {
            for (slot, v) in slots.iter().zip(c.to_array()) {
                slot.store(v, Relaxed);
            }
        }
    }

    pub fn publish_histograms(&self, h: &WorkerHistograms) {
        let values = h
            .all()
            .into_iter()
            .flat_map(|h| h.counts.iter().copied().chain([h.sum_ms]));
        for (slot, v) in self.histograms.iter().zip(values) {
            slot.store(v, Relaxed);
        }
    }

    fn load_histograms(&self) -> WorkerHistograms {
        let mut out = WorkerHistograms::default();
        let mut values = self.histograms.iter().map(|v| v.load(Relaxed));
        for h in out.all_mut() {
            for c in h.counts.iter_mut() {
                *c = values.next().unwrap_or(0);
            }
            h.sum_ms = values.next().unwrap_or(0);
        }
        out
    }

    /// Milliseconds since this worker last published; `None` once it has finished.
    pub fn heartbeat_age_ms(&self) -> Option<u64> {
        if self.finished.load(Relaxed) {
            return None;
        }
        Some(monotonic_ms().saturating_sub(self.heartbeat_ms.load(Relaxed)))
    }

    /// The worker left its loop normally.
    pub fn finish(&self) {
        self.finished.store(true, Relaxed);
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
    /// Index of its listener in [`StatsSnapshot::listeners`].
    pub listener: usize,
    /// A reload removed it; shown while sessions or idle connections remain on it.
    pub retired: bool,
    pub up: bool,
    /// Sessions using it now, across workers.
    pub active: u64,
    pub probes_failed: u64,
    /// Idle pooled connections (the shared warm pool's).
    pub idle: u64,
    /// Sessions that started relaying to it, across workers.
    pub sessions_total: u64,
    /// Bytes sent to it (from its clients) and received from it (for them).
    pub bytes_to: u64,
    pub bytes_from: u64,
    /// Dial attempts that failed (clients' and pool dials), across workers.
    pub connect_errors: u64,
    /// The last health probe: how long ago (ms) and whether it passed.
    pub last_probe: Option<(u64, bool)>,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSnapshot {
    pub name: String,
    pub addr: SocketAddr,
    /// Its sockets are listening (false once a drain closed them, or the proxy stopped).
    pub bound: bool,
}

/// All workers' counters added up, plus the per-worker values and the shared state.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub total: WorkerCounters,
    pub per_worker: Vec<WorkerCounters>,
    /// Whether every worker's buffer region is registered as fixed buffers.
    pub buffers_registered: bool,
    /// The data plane every worker runs on.
    pub data_plane: crate::driver::DataPlane,
    /// Sessions holding one of the `max_active` slots.
    pub admitted: u64,
    /// Clients waiting for admission now.
    pub queued: u64,
    pub endpoints: Vec<EndpointSnapshot>,
    pub listeners: Vec<ListenerSnapshot>,
    pub histograms: WorkerHistograms,
    /// Per worker: milliseconds since it last published (it publishes every 100 ms);
    /// `None` for a worker that finished (drained or stopped).
    pub heartbeat_age_ms: Vec<Option<u64>>,
    /// A drain has begun (SIGTERM): the proxy is finishing, not taking new work.
    pub draining: bool,
    /// The warm pool (shared by the workers): idle connections and discards by reason.
    pub pool: crate::upstream::PoolStats,
    /// Failed health probes of every endpoint ever configured, retired ones included
    /// (`endpoints` drops a retired endpoint once it is empty; this total never drops).
    pub health_check_failures: u64,
}

impl StatsSnapshot {
    pub fn collect(workers: &[std::sync::Arc<PublishedCounters>]) -> StatsSnapshot {
        let per_worker: Vec<WorkerCounters> = workers.iter().map(|w| w.load()).collect();
        let mut total = WorkerCounters::default();
        for c in &per_worker {
            total.add(c);
        }
        let mut histograms = WorkerHistograms::default();
        for w in workers {
            histograms.add(&w.load_histograms());
        }
        StatsSnapshot {
            total,
            per_worker,
            buffers_registered: workers.iter().all(|w| w.registered.load(Relaxed)),
            histograms,
            heartbeat_age_ms: workers.iter().map(|w| w.heartbeat_age_ms()).collect(),
            ..StatsSnapshot::default()
        }
    }

    /// The counters of `endpoint`, summed over `workers`.
    pub fn endpoint_totals(
        workers: &[std::sync::Arc<PublishedCounters>],
        endpoint: usize,
    ) -> EndpointCounters {
        let mut total = EndpointCounters::default();
        for slots in workers.iter().filter_map(|w| w.endpoints.get(endpoint)) {
            total.add_array([0, 1, 2].map(|i| slots[i].load(Relaxed)));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::new(LATENCY_BOUNDS_MS);
        h.record(0);
        h.record(1);
        h.record(2);
        h.record(60_000);
        assert_eq!(h.counts[0], 2, "0 and 1 ms are <= 1 ms");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BOUNDS_MS.len()], 1, "+Inf");
        assert_eq!(h.sum_ms, 60_003);
    }

    #[test]
    fn histograms_round_trip_through_the_published_copy() {
        let p = PublishedCounters::new(2);
        let mut h = WorkerHistograms::default();
        h.connect_ms.record(3);
        h.session_ms.record(5000);
        p.publish_histograms(&h);
        assert_eq!(p.load_histograms(), h);
        let c = EndpointCounters {
            sessions: 3,
            bytes_to: 10,
            bytes_from: 20,
        };
        p.publish_endpoint(1, &c);
        let w = [std::sync::Arc::new(p)];
        assert_eq!(StatsSnapshot::endpoint_totals(&w, 1), c);
        assert_eq!(
            StatsSnapshot::endpoint_totals(&w, 5000),
            EndpointCounters::default()
        );
    }
}
