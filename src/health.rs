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
    let mut next = crate::deadline::after(Instant::now(), cfg.interval);
    while !shared.stopping() {
        if Instant::now() < next {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
            continue;
        }
        next = crate::deadline::after(next, cfg.interval);
        probe_all(shared, cfg.timeout);
    }
}

/// Probes every endpoint at once (one short-lived thread each), so one slow endpoint
/// does not delay the verdict on the others.
fn probe_all(shared: &Shared, timeout: Duration) {
    let table = &shared.endpoints;
    let results: Vec<Option<bool>> = std::thread::scope(|s| {
        let probes: Vec<_> = (0..table.len())
            .map(|id| {
                let addr = table.get(id).addr;
                s.spawn(move || match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => Some(true),
                    // Out of descriptors or memory here says nothing about the endpoint:
                    // counting it would mark a healthy endpoint down whenever the proxy
                    // runs out of fds (and keep it down for `rise` rounds after).
                    Err(e) if is_local_shortage(&e) => None,
                    Err(_) => Some(false),
                })
            })
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().unwrap_or(Some(false)))
            .collect()
    });
    let mut changed = false;
    let mut skipped = 0;
    for (id, ok) in results.into_iter().enumerate() {
        let Some(ok) = ok else {
            skipped += 1;
            continue;
        };
        let e = table.get(id);
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
