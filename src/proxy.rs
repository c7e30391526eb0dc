//! The running proxy as its embedder sees it: [`start`] binds the listeners, builds the
//! [`Shared`] state and spawns the workers and control threads; [`ProxyHandle`] runs and
//! stops them; [`ShutdownTrigger`] stops them from another thread.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::admin::AdminServer;
use crate::admission::Admission;
use crate::buffer::Registration;
use crate::config::{Config, MonitoringConfig};
use crate::driver::sys;
use crate::error::ProxyError;
use crate::metrics::{PublishedCounters, StatsSnapshot};
use crate::reload::Reloader;
use crate::session::Listener;
use crate::settings::{LiveConfig, Settings};
use crate::shared::Shared;
use crate::upstream::{self, keeper, EndpointTable, WarmPool};
use crate::view::ProxyView;
use crate::worker::{self, WorkerParts};

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
///
/// With `data_plane: auto`, a worker that cannot set up the io_uring the plan sized (the
/// kernel charges locked memory per user, so another process of the same user may hold
/// part of the limit) makes the whole proxy start again on epoll, with a warning: all
/// workers run one data plane, and a start fails only when no data plane can run.
pub fn start(config: Config) -> Result<ProxyHandle, ProxyError> {
    let plan = plan_for(&config)?;
    let auto = config.data_plane == crate::config::DataPlaneSetting::Auto;
    if !auto || plan.data_plane == crate::driver::DataPlane::Epoll {
        return start_planned(config, plan);
    }
    match start_planned(config.clone(), plan) {
        Err(ProxyError::UringUnavailable(why)) => {
            let mut epoll = plan_with(&config, crate::config::DataPlaneSetting::Epoll)?;
            epoll.fallback = Some(format!(
                "io_uring could not be set up after all, so the epoll data plane runs \
                 instead. Cause: {why}"
            ));
            start_planned(config, epoll)
        }
        other => other,
    }
}

fn start_planned(config: Config, plan: crate::driver::Plan) -> Result<ProxyHandle, ProxyError> {
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
        listen_addrs.push((l.name.clone(), actual));
    }

    let mut wake_fds = Vec::new();
    for _ in 0..workers {
        wake_fds.push(sys::eventfd().map_err(internal("cannot create an eventfd".into()))?);
    }
    let wake_raw: Vec<RawFd> = wake_fds.iter().map(|f| f.as_raw_fd()).collect();
    let pool_enabled = conn.pool.enabled && conn.pool.max_idle > 0;
    let shared = Arc::new(Shared::new(
        wake_fds,
        Admission::new(conn.pool.max_active, conn.pool.max_queued, workers),
        EndpointTable::per_listener(
            &config
                .listeners
                .iter()
                .map(|l| l.resolved.clone())
                .collect::<Vec<_>>(),
            conn.health_check.rise,
            conn.health_check.fall,
        ),
        WarmPool::new(
            endpoint_addrs.len(),
            if pool_enabled { conn.pool.max_idle } else { 0 },
            conn.pool.idle_timeout,
            conn.pool.retry_interval,
            Instant::now(),
        )
        .map_err(internal("cannot set up the warm pool's watch".into()))?,
        LiveConfig::new(&config, listener_endpoints.clone()),
        conn.health_check.clone(),
    ));
    let settings = Settings::from_config(&config);

    let mut threads = Vec::new();
    let mut published = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Registration, ProxyError>>();
    for (index, socks) in sockets.into_iter().enumerate() {
        let counters = Arc::new(PublishedCounters::new(upstream::MAX_ENDPOINTS));
        published.push(counters.clone());
        let listeners: Vec<Listener> = socks
            .into_iter()
            .zip(&listener_endpoints)
            .zip(&listen_addrs)
            .map(|((fd, eps), (_, addr))| Listener {
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
        let thread = worker::spawn(parts, plan.clone(), ready_tx.clone())
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
            listeners: listen_addrs.clone(),
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
    // Said once every worker accepts: a start that steps down to epoll says it once.
    for (l, (_, addr)) in config.listeners.iter().zip(&listen_addrs) {
        tracing::info!(listener = %l.name, addr = %addr, upstreams = ?l.upstreams, "listening");
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

/// A running proxy: its bound addresses, its counters, and the way to stop it.
pub struct ProxyHandle {
    pub(crate) threads: Vec<JoinHandle<Result<(), ProxyError>>>,
    pub(crate) prober: Option<JoinHandle<()>>,
    pub(crate) keeper: Option<JoinHandle<()>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) view: ProxyView,
    pub(crate) admin: Option<AdminServer>,
    pub(crate) monitoring: MonitoringConfig,
    pub(crate) reloader: Arc<Reloader>,
}

impl ProxyHandle {
    /// The bound address of each listener, in config order (useful when the config says port 0).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.view.listeners.clone()
    }

    /// The counters as last published by the workers (every 100 ms), with the admission
    /// and endpoint state as of now.
    pub fn stats(&self) -> StatsSnapshot {
        self.view.stats()
    }

    /// Applies a new configuration to the running proxy (SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// A read-only view for the control plane.
    pub fn view(&self) -> ProxyView {
        self.view.clone()
    }

    /// Starts the admin HTTP server on `connection.monitoring.listen`; it stops with the
    /// proxy. Returns its bound address.
    pub fn start_admin(&mut self) -> Result<SocketAddr, ProxyError> {
        let server = AdminServer::start(self.view.clone(), &self.monitoring)?;
        let addr = server.local_addr();
        self.admin = Some(server);
        Ok(addr)
    }

    /// Asks every worker to stop and waits for them.
    pub fn shutdown(self) -> Result<(), ProxyError> {
        self.shutdown_trigger().trigger();
        self.wait()
    }

    /// Waits until the workers stop (after a trigger, or on a fatal error).
    pub fn wait(mut self) -> Result<(), ProxyError> {
        let mut result = Ok(());
        for t in std::mem::take(&mut self.threads) {
            let r = t.join().unwrap_or_else(|_| {
                Err(ProxyError::Internal {
                    what: "a worker thread panicked".into(),
                    source: std::io::Error::other("panic"),
                })
            });
            if let Err(e) = r {
                // One worker failing stops the others: a partial proxy is worse than none.
                self.shutdown_trigger().trigger();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        // The workers are gone: the prober and the admin server stop too.
        self.shutdown_trigger().trigger();
        for t in [self.prober.take(), self.keeper.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        // Without a keeper (pool disabled, or a failed start) nothing else closes it.
        self.shared.pool.close();
        result
    }

    /// A handle that can stop the proxy from another thread (a signal handler thread).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            shared: self.shared.clone(),
        }
    }
}

/// Stops the proxy from another thread.
#[derive(Clone)]
pub struct ShutdownTrigger {
    pub(crate) shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Drain, first step: `/readyz` fails so that load balancers stop routing here;
    /// everything else goes on.
    pub fn begin_drain(&self) {
        self.shared.set_draining();
    }

    /// Drain, second step: listeners close, the warm pool closes (its idle connections
    /// are closed and nothing joins it any more), sessions in flight finish; each worker
    /// stops when its last session ends.
    pub fn close_listeners(&self) {
        self.begin_drain();
        self.shared.set_close_listeners();
        self.shared.pool.close();
        self.shared.wake_all();
    }

    /// Stops at once: every session is closed.
    pub fn trigger(&self) {
        self.shared.set_stop();
        self.shared.wake_all();
    }
}

/// The data plane `config` would run on here, and how: what `check` prints and `start`
/// logs. Probes io_uring; an explicit `data_plane: io_uring` that cannot run is an error.
pub fn plan_for(config: &Config) -> Result<crate::driver::Plan, ProxyError> {
    plan_with(config, config.data_plane)
}

/// The plan for `config`'s workers and buffers under `setting`.
fn plan_with(
    config: &Config,
    setting: crate::config::DataPlaneSetting,
) -> Result<crate::driver::Plan, ProxyError> {
    let workers = config.workers.resolve();
    let b = &config.connection.buffer;
    let slots = b.max_pool_size.div_ceil(workers).max(1);
    crate::driver::select::plan(setting, workers, slots, b.size)
}
