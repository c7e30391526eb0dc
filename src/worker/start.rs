//! A worker's start: its settings from the config, its driver built on its own thread,
//! and its run.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Worker, WorkerOps};
use crate::buffer::{BufferRegistry, Registration};
use crate::driver::epoll::Epoll;
use crate::driver::select::{self, Plan, UringSetup, RING_ENTRIES};
use crate::driver::uring::{self, Ring};
use crate::driver::{DataPlane, Driver};
use crate::error::ProxyError;
use crate::metrics::PublishedCounters;
use crate::session::{Context, Listener};
use crate::settings::{Settings, TICK};
use crate::shared::Shared;

/// What a worker is built from, whichever driver it gets.
pub(crate) struct WorkerParts {
    pub index: usize,
    pub listeners: Vec<Listener>,
    pub settings: Settings,
    pub endpoint_addrs: Vec<SocketAddr>,
    pub published: Arc<PublishedCounters>,
    pub shared: Arc<Shared>,
    pub wake_fd: RawFd,
    pub slots: usize,
    pub slot_size: usize,
    pub connect_timeout: Duration,
    pub retry_interval: Duration,
}

/// Spawns worker `parts.index` on `plan`'s data plane; it reports on `ready` once its
/// driver is built (or could not be).
pub(crate) fn spawn(
    parts: WorkerParts,
    plan: Plan,
    ready: mpsc::Sender<Result<Registration, ProxyError>>,
) -> std::io::Result<JoinHandle<Result<(), ProxyError>>> {
    std::thread::Builder::new()
        .name(format!("sssonector-w{}", parts.index))
        .spawn(move || match plan.data_plane {
            DataPlane::IoUring => run_worker(parts, ready, |p| build_ring(p, &plan)),
            DataPlane::Epoll => run_worker(parts, ready, build_epoll),
        })
}

/// Builds the driver on the worker's own thread (an io_uring with `SINGLE_ISSUER` must
/// be used by the thread that made it), reports readiness, and runs the worker.
fn run_worker<D: Driver>(
    parts: WorkerParts,
    ready: mpsc::Sender<Result<Registration, ProxyError>>,
    build: impl FnOnce(&WorkerParts) -> Result<D, ProxyError>,
) -> Result<(), ProxyError> {
    let driver = match build(&parts) {
        Ok(d) => d,
        Err(e) => {
            // start() reports it; the thread itself ends quietly.
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let registration = driver.buffers().registration();
    parts
        .published
        .registered
        .store(registration == Registration::Registered, Ordering::Relaxed);
    let _ = ready.send(Ok(registration));
    drop(ready);
    let now = Instant::now();
    let endpoints = parts.endpoint_addrs.len();
    Worker {
        ctx: Context::new(
            parts.index,
            driver,
            parts.listeners,
            parts.settings,
            parts.shared,
            endpoints,
            now,
        ),
        live_generation: 0,
        published: parts.published,
        wake_fd: parts.wake_fd,
        cancelled_all: false,
        ops: WorkerOps::default(),
        started: now,
        next_sweep: now,
    }
    .run()
}

fn registry(p: &WorkerParts) -> Result<BufferRegistry, ProxyError> {
    BufferRegistry::new(p.slots, p.slot_size).map_err(|source| ProxyError::Internal {
        what: format!("cannot map {} buffers of {} bytes", p.slots, p.slot_size),
        source,
    })
}

fn build_ring(p: &WorkerParts, plan: &Plan) -> Result<Ring, ProxyError> {
    let setup = plan.uring.unwrap_or(UringSetup {
        sq_entries: RING_ENTRIES,
        ring_entries: p.slots.next_power_of_two(),
        fixed: true,
    });
    let (ring, flavor) = uring::build_ring(setup.sq_entries)?;
    let mut ring = Ring::new(
        ring,
        registry(p)?,
        &p.endpoint_addrs,
        p.connect_timeout,
        p.retry_interval,
        TICK,
    );
    let registration = ring
        .register_buffers(setup.fixed, setup.ring_entries)
        .map_err(|e| {
            ProxyError::UringUnavailable(format!(
                "worker {} cannot register its provided-buffer ring of {} entries ({e}); the \
                 locked-memory limit (RLIMIT_MEMLOCK) is {}: another process of this user may \
                 hold part of it. Raise it, grant CAP_IPC_LOCK, or set `data_plane: epoll`",
                p.index,
                setup.ring_entries,
                select::Memlock::current()
            ))
        })?;
    tracing::debug!(
        worker = p.index,
        ?flavor,
        ?registration,
        slots = p.slots,
        "worker ready"
    );
    Ok(ring)
}

fn build_epoll(p: &WorkerParts) -> Result<Epoll, ProxyError> {
    Epoll::new(
        registry(p)?,
        &p.endpoint_addrs,
        p.connect_timeout,
        p.retry_interval,
        TICK,
    )
    .map_err(|source| ProxyError::Internal {
        what: "cannot create the worker's epoll set".into(),
        source,
    })
}
