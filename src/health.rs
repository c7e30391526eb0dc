//! The endpoint prober: a control thread that TCP-connects to every endpoint each
//! `health_check.interval` (within `timeout`) and feeds the shared endpoint table.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::HealthCheckConfig;
use crate::upstream::Transition;
use crate::worker::Shared;

/// Starts the prober; it stops when the proxy stops.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    cfg: HealthCheckConfig,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sssonector-health".into())
        .spawn(move || run(&shared, &cfg))
}

fn run(shared: &Shared, cfg: &HealthCheckConfig) {
    let mut next = Instant::now() + cfg.interval;
    while !shared.stopping() {
        if Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
            continue;
        }
        next += cfg.interval;
        probe_all(shared, cfg.timeout);
    }
}

/// Probes every endpoint at once (one short-lived thread each), so one slow endpoint
/// does not delay the verdict on the others.
fn probe_all(shared: &Shared, timeout: Duration) {
    let table = &shared.endpoints;
    let results: Vec<bool> = std::thread::scope(|s| {
        let probes: Vec<_> = (0..table.len())
            .map(|id| {
                let addr = table.get(id).addr;
                s.spawn(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
            })
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().unwrap_or(false))
            .collect()
    });
    let mut changed = false;
    for (id, ok) in results.into_iter().enumerate() {
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
