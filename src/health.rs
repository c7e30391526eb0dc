//! The endpoint prober: a control thread that TCP-connects to every endpoint each
//! `health_check.interval` (within `timeout`) and feeds the shared endpoint table. It
//! reads `health_check` from [`Shared`] on every round, so a reload takes effect at the
//! next one; while health checks are off it only waits.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::HealthCheckConfig;
use crate::upstream::Transition;
use crate::worker::Shared;

/// Starts the prober; it stops when the proxy stops.
pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sssonector-health".into())
        .spawn(move || run(&shared))
}

fn config(shared: &Shared) -> HealthCheckConfig {
    shared
        .health_config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

fn run(shared: &Shared) {
    let mut last = Instant::now();
    while !shared.stopping() {
        let cfg = config(shared);
        let next = last + cfg.interval;
        if !cfg.enabled || Instant::now() < next {
            if !cfg.enabled {
                last = Instant::now();
            }
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(50)));
            continue;
        }
        last = next.max(Instant::now() - cfg.interval);
        probe_all(shared, cfg.timeout);
    }
}

/// Probes every endpoint at once (one short-lived thread each), so one slow endpoint
/// does not delay the verdict on the others.
fn probe_all(shared: &Shared, timeout: Duration) {
    let table = &shared.endpoints;
    let results: Vec<(usize, bool)> = std::thread::scope(|s| {
        // Retired endpoints (removed by a reload) are not probed.
        let probes: Vec<_> = (0..table.len())
            .filter(|&id| !table.is_retired(id))
            .map(|id| {
                let addr = table.get(id).addr;
                (
                    id,
                    s.spawn(move || TcpStream::connect_timeout(&addr, timeout).is_ok()),
                )
            })
            .collect();
        probes
            .into_iter()
            .map(|(id, p)| (id, p.join().unwrap_or(false)))
            .collect()
    });
    let mut changed = false;
    for (id, ok) in results {
        let e = table.get(id);
        e.last_probe_ms
            .store(crate::metrics::monotonic_ms() + 1, Ordering::Relaxed);
        e.last_probe_ok.store(ok, Ordering::Relaxed);
        if !ok {
            e.probes_failed.fetch_add(1, Ordering::Relaxed);
        }
        match table.observe(id, ok) {
            Transition::WentDown => {
                tracing::warn!(upstream = %e.addr, "upstream: health check failed, endpoint marked down");
                changed = true;
            }
            Transition::CameUp => {
                tracing::info!(upstream = %e.addr, "upstream: health check passed, endpoint marked up");
                changed = true;
            }
            Transition::None => {}
        }
    }
    if changed {
        // Workers flush a down endpoint's idle pool, or refill a recovered one, now.
        shared.wake_all();
    }
}
