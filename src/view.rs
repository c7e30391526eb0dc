//! [`ProxyView`]: what the control plane (admin server, exporter, signal handling) sees
//! of a running proxy. It only reads what the workers publish and the shared tables;
//! nothing it does can stall a worker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::metrics::{
    monotonic_ms, EndpointSnapshot, ListenerSnapshot, PublishedCounters, StatsSnapshot,
};
use crate::worker::Shared;

/// A cheap, cloneable, read-only view of a running proxy.
#[derive(Clone)]
pub struct ProxyView {
    pub(crate) shared: Arc<Shared>,
    pub(crate) published: Vec<Arc<PublishedCounters>>,
    /// Name and bound address of each listener, in config order.
    pub(crate) listeners: Vec<(String, SocketAddr)>,
}

impl ProxyView {
    /// The counters as last published by the workers (every 100 ms), with the admission,
    /// endpoint and drain state as of now.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::collect(&self.published);
        let shared = &self.shared;
        s.admitted = shared.admission.active() as u64;
        s.queued = shared.admission.queued() as u64;
        s.pool = shared.pool.stats();
        let idle = shared.pool.idle_per_endpoint();
        s.draining = shared.draining() || shared.stopping();
        let now = monotonic_ms();
        let t = &shared.endpoints;
        s.endpoints = (0..t.len())
            .map(|id| {
                let e = t.get(id);
                let probed = e.last_probe_ms.load(Ordering::Relaxed);
                let counted = StatsSnapshot::endpoint_totals(&self.published, id);
                EndpointSnapshot {
                    addr: e.addr,
                    listener: e.listener,
                    retired: t.is_retired(id),
                    up: t.is_up(id),
                    active: e.active.load(Ordering::Relaxed) as u64,
                    probes_failed: e.probes_failed.load(Ordering::Relaxed),
                    idle: idle.get(id).map_or(0, |&n| n as u64),
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
            .collect();
        let bound = !shared.listeners_closing() && !shared.stopping();
        s.listeners = self
            .listeners
            .iter()
            .map(|(name, addr)| ListenerSnapshot {
                name: name.clone(),
                addr: *addr,
                bound,
            })
            .collect();
        s
    }
}
