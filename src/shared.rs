//! [`Shared`]: the state the handle, the workers, the pool keeper and the health prober
//! all see; the control plane's only way to reach a running worker.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::admission::Admission;
use crate::config::HealthCheckConfig;
use crate::driver::sys;
use crate::settings::LiveConfig;
use crate::upstream::{keeper, EndpointTable, WarmPool};

/// State shared by the handle, the workers and the health prober.
pub(crate) struct Shared {
    stop: AtomicBool,
    /// A drain is under way (`/readyz` fails); set before `close_listeners`.
    draining: AtomicBool,
    /// Drain, second step: workers close their listeners and finish their sessions.
    close_listeners: AtomicBool,
    wake_fds: Vec<OwnedFd>,
    pub admission: Admission,
    pub endpoints: EndpointTable,
    /// The warm pool, shared by every worker; its keeper thread watches it.
    pub pool: WarmPool,
    /// The settings workers apply, replaced by a reload; `live_generation` tells a worker
    /// that it has not applied the latest yet.
    pub live: Mutex<Arc<LiveConfig>>,
    pub live_generation: AtomicU64,
    /// Read by the prober on each round, replaced by a reload.
    pub health_config: Mutex<HealthCheckConfig>,
}

impl Shared {
    /// One eventfd per worker in `wake_fds` (worker `i` waits on the `i`th).
    pub fn new(
        wake_fds: Vec<OwnedFd>,
        admission: Admission,
        endpoints: EndpointTable,
        pool: WarmPool,
        live: LiveConfig,
        health_config: HealthCheckConfig,
    ) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            close_listeners: AtomicBool::new(false),
            wake_fds,
            admission,
            endpoints,
            pool,
            live: Mutex::new(Arc::new(live)),
            live_generation: AtomicU64::new(0),
            health_config: Mutex::new(health_config),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn listeners_closing(&self) -> bool {
        self.close_listeners.load(Ordering::Acquire)
    }

    /// Marks the proxy stopping (the caller wakes the workers).
    pub fn set_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Marks a drain under way: `/readyz` fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Asks the workers to close their listeners (the caller wakes them).
    pub fn set_close_listeners(&self) {
        self.close_listeners.store(true, Ordering::Release);
    }

    /// Wakes worker `index` (it looks at its grants, the stop flag and endpoint health).
    pub fn wake(&self, index: usize) {
        if let Some(fd) = self.wake_fds.get(index) {
            sys::eventfd_signal(fd.as_raw_fd());
        }
    }

    /// Hands workers new settings (a reload) and wakes them to apply them.
    pub fn publish_live(&self, live: LiveConfig) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        self.live_generation.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    pub fn wake_all(&self) {
        for i in 0..self.wake_fds.len() {
            self.wake(i);
        }
        self.pool.wake_keeper();
    }
}

impl keeper::KeeperHost for Shared {
    fn pool(&self) -> &WarmPool {
        &self.pool
    }

    fn endpoints(&self) -> &EndpointTable {
        &self.endpoints
    }

    fn stopping(&self) -> bool {
        Shared::stopping(self)
    }

    fn wake_worker(&self, n: usize) {
        if !self.wake_fds.is_empty() {
            self.wake(n % self.wake_fds.len());
        }
    }
}
