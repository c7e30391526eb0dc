//! [`start`]: binds the listeners, builds the shared state and spawns the workers and
//! the control threads.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ProxyHandle, Settings, Shared, Worker, WorkerListener, TICK};
use crate::admission::Admission;
use crate::buffer::{BufferRegistry, Registration};
use crate::config::Config;
use crate::conn::ConnTable;
use crate::driver::epoll::Epoll;
use crate::driver::select::{self, Plan, UringSetup, RING_ENTRIES};
use crate::driver::uring::{self, Ring};
use crate::driver::{sys, DataPlane, Driver, MAX_IOV};
use crate::error::ProxyError;
use crate::logging::LogLimits;
use crate::metrics::{EndpointCounters, PublishedCounters, WorkerCounters, WorkerHistograms};
use crate::reload::{LiveConfig, Reloader};
use crate::upstream::{self, keeper, EndpointTable, WarmPool};
use crate::view::ProxyView;

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

/// Warns when fewer sessions than `max_active` can hold every buffer of one worker
/// (docs/design.md, "Pool sizing"): then clients that stop reading make that worker's
/// other sessions wait for buffers, until `session.send_timeout` closes them.
fn warn_if_few_sessions_hold_the_pool(config: &Config, slots: usize) {
    let c = &config.connection;
    let max_in_flight = Settings::from_config(config).max_in_flight;
    let sessions = crate::buffer::directions_to_exhaust(slots, max_in_flight).div_ceil(2);
    if sessions >= c.pool.max_active {
        return;
    }
    let how_long = match c.session.send_limit() {
        Some(t) => format!(
            "until session.send_timeout ({}) closes them",
            crate::config::duration::format(t)
        ),
        None => "for as long as they stay (session.send_timeout is 0)".into(),
    };
    tracing::warn!(
        "one worker's {slots} buffers can be held by {sessions} sessions whose peers stop \
         reading (max(reserve {}, ceil({slots} / max_in_flight {max_in_flight})) directions, \
         two per session), fewer than max_active {}: the worker's other sessions then wait \
         for buffers {how_long}. Raise buffer.max_pool_size or lower max_active to rule it out",
        crate::buffer::reserve(slots),
        c.pool.max_active
    );
}

/// Binds every listener, starts the workers (and the health prober), and returns once
/// every worker is accepting.
pub fn start(config: Config) -> Result<ProxyHandle, ProxyError> {
    let workers = config.workers.resolve();
    let conn = &config.connection;
    let slots = conn.buffer.max_pool_size.div_ceil(workers).max(1);
    let internal = |what: String| move |source| ProxyError::Internal { what, source };
    match sys::ignore_sigpipe() {
        Ok(true) => {
            tracing::debug!("SIGPIPE is ignored from now on (WriteFixed cannot pass MSG_NOSIGNAL)")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!("cannot ignore SIGPIPE: {e}; send_mode fixed may be killed by one")
        }
    }
    match sys::raise_nofile_limit() {
        Ok(n) if n < 4096 => tracing::warn!(
            limit = n,
            "the open-file limit allows only {} sessions",
            n / 2
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }

    warn_if_few_sessions_hold_the_pool(&config, slots);
    let plan = crate::driver::plan_for(&config)?;
    if let Some(why) = &plan.fallback {
        tracing::warn!("{why}");
    }
    tracing::info!("{}", plan.summary());

    // Every endpoint of every listener; a listener's endpoints are ids into this list.
    let mut endpoint_addrs = Vec::new();
    let mut listener_endpoints = Vec::new();
    for l in &config.listeners {
        let mut ids = Vec::new();
        for addr in &l.resolved {
            // Validation rejects two spellings of one address; a config built without it
            // still gets one endpoint per address (a reload finds one id per address).
            if ids.iter().any(|&id| endpoint_addrs[id] == *addr) {
                continue;
            }
            ids.push(endpoint_addrs.len());
            endpoint_addrs.push(*addr);
        }
        listener_endpoints.push(ids);
    }

    // Bind worker 0's sockets first so port 0 resolves once, then the rest on that port.
    let mut listen_addrs = Vec::new();
    let mut sockets: Vec<Vec<OwnedFd>> = (0..workers).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let bind_err = |source| ProxyError::Bind {
            name: l.name.clone(),
            addr: l.listen,
            source,
        };
        let first = sys::reuseport_listener(&l.listen, 4096).map_err(bind_err)?;
        let actual = sys::local_addr(first.as_raw_fd()).map_err(bind_err)?;
        sockets[0].push(first);
        for per_worker in sockets.iter_mut().skip(1) {
            per_worker.push(sys::reuseport_listener(&actual, 4096).map_err(bind_err)?);
        }
        tracing::info!(listener = %l.name, addr = %actual, upstreams = ?l.upstreams, "listening");
        listen_addrs.push((l.name.clone(), actual));
    }

    let mut wake_fds = Vec::new();
    for _ in 0..workers {
        wake_fds.push(sys::eventfd().map_err(internal("cannot create an eventfd".into()))?);
    }
    let wake_raw: Vec<RawFd> = wake_fds.iter().map(|f| f.as_raw_fd()).collect();
    let pool_enabled = conn.pool.enabled && conn.pool.max_idle > 0;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        close_listeners: AtomicBool::new(false),
        wake_fds,
        admission: Admission::new(conn.pool.max_active, conn.pool.max_queued, workers),
        endpoints: EndpointTable::per_listener(
            &config
                .listeners
                .iter()
                .map(|l| l.resolved.clone())
                .collect::<Vec<_>>(),
            conn.health_check.rise,
            conn.health_check.fall,
        ),
        pool: WarmPool::new(
            endpoint_addrs.len(),
            if pool_enabled { conn.pool.max_idle } else { 0 },
            conn.pool.idle_timeout,
            conn.pool.retry_interval,
            Instant::now(),
        )
        .map_err(internal("cannot set up the warm pool's watch".into()))?,
        live: Mutex::new(Arc::new(LiveConfig::new(
            &config,
            listener_endpoints.clone(),
        ))),
        live_generation: AtomicU64::new(0),
        health_config: Mutex::new(conn.health_check.clone()),
    });
    let settings = Settings::from_config(&config);

    let mut threads = Vec::new();
    let mut published = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Registration, ProxyError>>();
    for (index, socks) in sockets.into_iter().enumerate() {
        let counters = Arc::new(PublishedCounters::new(upstream::MAX_ENDPOINTS));
        published.push(counters.clone());
        let listeners: Vec<WorkerListener> = socks
            .into_iter()
            .zip(&listener_endpoints)
            .zip(&listen_addrs)
            .map(|((fd, eps), (_, addr))| WorkerListener {
                fd,
                endpoints: eps.clone(),
                next: index,
                accept_armed: false,
                loopback: addr.ip().is_loopback(),
            })
            .collect();
        let parts = WorkerParts {
            index,
            listeners,
            settings: settings.clone(),
            endpoint_addrs: endpoint_addrs.clone(),
            published: counters,
            shared: shared.clone(),
            wake_fd: wake_raw[index],
            slots,
            slot_size: conn.buffer.size,
            connect_timeout: conn.pool.connect_timeout,
            retry_interval: conn.pool.retry_interval,
        };
        let ready = ready_tx.clone();
        let plan = plan.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sssonector-w{index}"))
            .spawn(move || match plan.data_plane {
                DataPlane::IoUring => run_worker(parts, ready, |p| build_ring(p, &plan)),
                DataPlane::Epoll => run_worker(parts, ready, build_epoll),
            })
            .map_err(internal("cannot spawn a worker thread".into()))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut handle = ProxyHandle {
        threads,
        prober: None,
        keeper: None,
        shared: shared.clone(),
        view: ProxyView {
            shared: shared.clone(),
            published,
            listeners: listen_addrs,
            data_plane: plan.data_plane,
        },
        admin: None,
        monitoring: conn.monitoring.clone(),
        reloader: Arc::new(Reloader::new(shared.clone(), config.clone())),
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let _ = handle.shutdown();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    // A control thread that cannot start stops the workers already running: a proxy
    // without its pool keeper or prober is not the one configured. Both always run: a
    // reload may turn the pool or health checks on; they idle while off.
    match keeper::spawn(shared.clone()) {
        Ok(t) => handle.keeper = Some(t),
        Err(e) => {
            let _ = handle.shutdown();
            return Err(internal("cannot spawn the pool keeper".into())(e));
        }
    }
    match crate::health::spawn(shared) {
        Ok(t) => handle.prober = Some(t),
        Err(e) => {
            let _ = handle.shutdown();
            return Err(internal("cannot spawn the health prober".into())(e));
        }
    }
    Ok(handle)
}

/// What a worker is built from, whichever driver it gets.
struct WorkerParts {
    index: usize,
    listeners: Vec<WorkerListener>,
    settings: Settings,
    endpoint_addrs: Vec<SocketAddr>,
    published: Arc<PublishedCounters>,
    shared: Arc<Shared>,
    wake_fd: RawFd,
    slots: usize,
    slot_size: usize,
    connect_timeout: Duration,
    retry_interval: Duration,
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
