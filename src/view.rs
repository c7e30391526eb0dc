//! [`ProxyView`]: what the control plane (admin server, exporter, signal handling) sees
//! of a running proxy. It only reads what the workers publish and the shared tables;
//! nothing it does can stall a worker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::metrics::{
    monotonic_ms, EndpointSnapshot, ListenerSnapshot, PublishedCounters, StatsSnapshot,
};
use crate::shared::Shared;

/// A cheap, cloneable, read-only view of a running proxy.
#[derive(Clone)]
pub struct ProxyView {
    pub(crate) shared: Arc<Shared>,
    pub(crate) published: Vec<Arc<PublishedCounters>>,
    /// Name and bound address of each listener, in config order.
    pub(crate) listeners: Vec<(String, SocketAddr)>,
    /// The data plane every worker runs on, chosen at start.
    pub(crate) data_plane: crate::driver::DataPlane,
}

impl ProxyView {
    /// The data plane every worker runs on.
    pub fn data_plane(&self) -> crate::driver::DataPlane {
        self.data_plane
    }
}

impl ProxyView {
    /// The counters as last published by the workers (every 100 ms), with the admission,
    /// endpoint and drain state as of now.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::collect(&self.published);
        let shared = &self.shared;
        s.admitted = shared.admission.active() as u64;
        s.queued = shared.admission.queued() as u64;
        // One look at the pool, under one lock.
        let (pool, idle) = shared.pool.stats_and_idle();
        s.pool = pool;
        s.health_check_failures = self.health_check_failures();
        s.draining = shared.draining() || shared.stopping();
        s.endpoints = self.endpoints(Some(&idle));
        s.listeners = self.listeners();
        s.data_plane = self.data_plane;
        s
    }

    /// A drain or stop has begun.
    pub fn is_draining(&self) -> bool {
        self.shared.draining() || self.shared.stopping()
    }

    /// Per worker, milliseconds since it last published (`None`: finished): all that
    /// `/healthz` reads. No lock, no allocation beyond the vector.
    pub fn heartbeat_ages(&self) -> Vec<Option<u64>> {
        self.published
            .iter()
            .map(|w| w.heartbeat_age_ms())
            .collect()
    }

    /// What `/readyz` reads: the drain flag, the listeners and the endpoints' health,
    /// without the counters or the pool (no pool lock); idle counts are left at 0.
    pub fn readiness(&self) -> StatsSnapshot {
        StatsSnapshot {
            draining: self.is_draining(),
            endpoints: self.endpoints(None),
            listeners: self.listeners(),
            ..StatsSnapshot::default()
        }
    }

    /// Failed health probes of every endpoint the process ever had, retired ones
    /// included, so the total never goes down when a reload removes an endpoint.
    pub fn health_check_failures(&self) -> u64 {
        let t = &self.shared.endpoints;
        (0..t.len())
            .map(|id| t.get(id).probes_failed.load(Ordering::Relaxed))
            .sum()
    }

    /// Every endpoint still shown; `idle` (by id) also fills the counters.
    fn endpoints(&self, idle: Option<&[usize]>) -> Vec<EndpointSnapshot> {
        let shared = &self.shared;
        let now = monotonic_ms();
        let t = &shared.endpoints;
        (0..t.len())
            .map(|id| {
                let e = t.get(id);
                let probed = e.last_probe_ms.load(Ordering::Relaxed);
                let counted = if idle.is_some() {
                    StatsSnapshot::endpoint_totals(&self.published, id)
                } else {
                    Default::default()
                };
                EndpointSnapshot {
                    addr: e.addr,
                    listener: e.listener,
                    retired: t.is_retired(id),
                    up: t.is_up(id),
                    active: e.active.load(Ordering::Relaxed) as u64,
                    probes_failed: e.probes_failed.load(Ordering::Relaxed),
                    idle: idle.and_then(|i| i.get(id)).map_or(0, |&n| n as u64),
                    sessions_total: counted.sessions,
                    bytes_to: counted.bytes_to,
                    bytes_from: counted.bytes_from,
                    connect_errors: e.connect_errors.load(Ordering::Relaxed),
                    last_probe: (probed > 0).then(|| {
                        (
                            now.saturating_sub(probed - 1),
                            e.last_probe_ok.load(Ordering::Relaxed),
                        )
                    }),
                }
            })
            // A retired endpoint is shown while sessions or idle connections remain.
            .filter(|e: &EndpointSnapshot| !e.retired || e.active > 0 || e.idle > 0)
            .collect()
    }

    fn listeners(&self) -> Vec<ListenerSnapshot> {
        let shared = &self.shared;
        let bound = !shared.listeners_closing() && !shared.stopping();
        self.listeners
            .iter()
            .map(|(name, addr)| ListenerSnapshot {
                name: name.clone(),
                addr: *addr,
                bound,
            })
            .collect()
    }
}
