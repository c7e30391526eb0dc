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
use crate::shared::Shared;
use crate::upstream::Transition;

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
        let next = crate::deadline::after(last, cfg.interval);
        if !cfg.enabled || Instant::now() < next {
            if !cfg.enabled {
                last = Instant::now();
            }
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(50)));
            continue;
        }
        last = next.max(Instant::now().checked_sub(cfg.interval).unwrap_or(next));
        probe_all(shared, cfg.timeout);
    }
}

/// Probes every endpoint at once (one short-lived thread each), so one slow endpoint
/// does not delay the verdict on the others.
fn probe_all(shared: &Shared, timeout: Duration) {
    let table = &shared.endpoints;
    let results: Vec<(usize, Option<bool>)> = std::thread::scope(|s| {
        // Retired endpoints (removed by a reload) are not probed.
        let probes: Vec<_> = (0..table.len())
            .filter(|&id| !table.is_retired(id))
            .map(|id| {
                let addr = table.get(id).addr;
                (
                    id,
                    s.spawn(move || match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(_) => Some(true),
                        // Out of descriptors or memory here says nothing about the
                        // endpoint: counting it would mark a healthy endpoint down whenever
                        // the proxy runs out of fds (and keep it down for `rise` rounds).
                        Err(e) if is_local_shortage(&e) => None,
                        Err(_) => Some(false),
                    }),
                )
            })
            .collect();
        probes
            .into_iter()
            .map(|(id, p)| (id, p.join().unwrap_or(Some(false))))
            .collect()
    });
    let mut changed = false;
    let mut skipped = 0;
    for (id, ok) in results {
        let Some(ok) = ok else {
            skipped += 1;
            continue;
        };
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
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "health probes skipped: the proxy itself is out of descriptors or memory"
        );
    }
    if changed {
        // Workers flush a down endpoint's idle pool, or refill a recovered one, now.
        shared.wake_all();
    }
}

/// Errors that come from this process or host running short, not from the peer.
pub(crate) fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
