//! A worker's start: its settings from the config, its driver built on its own thread,
//! and its run.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Settings, Shared, Worker, WorkerListener, TICK};
use crate::buffer::{BufferRegistry, Registration};
use crate::config::Config;
use crate::conn::ConnTable;
use crate::driver::epoll::Epoll;
use crate::driver::select::{self, Plan, UringSetup, RING_ENTRIES};
use crate::driver::uring::{self, Ring};
use crate::driver::{DataPlane, Driver, MAX_IOV};
use crate::error::ProxyError;
use crate::logging::LogLimits;
use crate::metrics::{EndpointCounters, PublishedCounters, WorkerCounters, WorkerHistograms};

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Settings {
        let conn = &config.connection;
        Settings {
            max_in_flight: conn.buffer.max_in_flight.clamp(1, MAX_IOV),
            send_mode: conn.buffer.send_mode,
            pool_enabled: conn.pool.enabled && conn.pool.max_idle > 0,
            session_idle_timeout: conn.session.idle_limit(),
            send_timeout: conn.session.send_limit(),
            queue_timeout: conn.pool.queue_timeout,
            max_retries: conn.pool.max_retries,
            retry_interval: conn.pool.retry_interval,
            balance: conn.pool.balance,
            health_enabled: conn.health_check.enabled,
            sweep_every: sweep_period(config),
        }
    }
}

/// How often the sweep runs: a tenth of the shortest timer it serves, between 100 ms and 1 s.
fn sweep_period(config: &Config) -> Duration {
    let c = &config.connection;
    let mut shortest = c.pool.idle_timeout.min(c.pool.queue_timeout);
    if let Some(session) = c.session.idle_limit() {
        shortest = shortest.min(session);
    }
    if let Some(send) = c.session.send_limit() {
        shortest = shortest.min(send);
    }
    if c.health_check.enabled {
        shortest = shortest.min(c.health_check.interval);
    }
    (shortest / 10).clamp(TICK, Duration::from_secs(1))
}

/// What a worker is built from, whichever driver it gets.
pub(crate) struct WorkerParts {
    pub index: usize,
    pub listeners: Vec<WorkerListener>,
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
        index: parts.index,
        driver,
        table: ConnTable::default(),
        listeners: parts.listeners,
        pool_dialing: 0,
        live_generation: 0,
        settings: parts.settings,
        waiters: VecDeque::new(),
        waiters_empty: VecDeque::new(),
        holding: Vec::new(),
        holder_armed: 0,
        counters: WorkerCounters::default(),
        histograms: WorkerHistograms::default(),
        endpoint_counters: vec![EndpointCounters::default(); endpoints],
        log_limits: LogLimits::default(),
        debug_peers: HashMap::new(),
        queued: VecDeque::new(),
        published: parts.published,
        shared: parts.shared,
        wake_fd: parts.wake_fd,
        stopping: false,
        listeners_closed: false,
        cancelled_all: false,
        started: now,
        now,
        now_ms: 0,
        next_sweep: now,
        woken: Vec::new(),
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
