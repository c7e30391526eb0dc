//! Live reload (SIGHUP): a new configuration is applied to the running proxy without
//! dropping a session or the healthy part of the warm pool.
//!
//! - Upstreams: an endpoint that stays keeps its id, its health and its idle connections.
//!   A new one gets a new id in the append-only endpoint table and warms at once. A
//!   removed one is retired: no new session, its idle connections are closed, no refill;
//!   its sessions go on.
//! - The warm pool is one for the whole proxy: the reload changes it once, under its
//!   lock (endpoints' shares of the total `max_idle`, timers, retired endpoints' idle
//!   connections), while the keeper and the workers go on.
//! - Health, timeouts, limits: workers take the new [`LiveConfig`] on their next
//!   wake-up; the admission limits, health thresholds and prober settings are shared
//!   state and change at once.
//! - Listener addresses, the worker count, the buffer region and the admin server need a
//!   restart: such a reload is refused whole, and the running configuration stays.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ShutdownConfig};
use crate::settings::LiveConfig;
use crate::shared::Shared;
use crate::upstream::{self, Reconfigure, MAX_ENDPOINTS};

/// Why a reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, these changes need a restart: {}; the running configuration is unchanged", .0.join("; "))]
    NeedsRestart(Vec<String>),
    #[error("reload refused: more than {MAX_ENDPOINTS} endpoints since start need a restart; the running configuration is unchanged")]
    TooManyEndpoints,
}

/// What a reload changed, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub added: Vec<SocketAddr>,
    pub retired: Vec<SocketAddr>,
}

/// Applies new configurations to a running proxy; one reload at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    current: Mutex<Config>,
    /// `current.shutdown`, under a lock of its own that a reload holds only to store it:
    /// the drain reads it without waiting for a reload.
    shutdown: Arc<Mutex<ShutdownConfig>>,
}

impl Reloader {
    pub(crate) fn new(shared: Arc<Shared>, config: Config) -> Reloader {
        Reloader {
            shared,
            shutdown: Arc::new(Mutex::new(config.shutdown.clone())),
            current: Mutex::new(config),
        }
    }

    /// The drain settings in force, shared: a reload stores its new ones there.
    pub fn shutdown_settings(&self) -> Arc<Mutex<ShutdownConfig>> {
        self.shutdown.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Config> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `new` (already validated, as `check` does) or refuses it whole.
    pub fn reload(&self, new: Config) -> Result<ReloadOutcome, ReloadError> {
        let mut current = self.lock();
        let restart = needs_restart(&current, &new);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        let table = &self.shared.endpoints;
        let unused = MAX_ENDPOINTS - table.len();
        let fresh = new
            .listeners
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.resolved.iter().map(move |a| (i, *a)))
            .filter(|(i, a)| table.find(*i, *a).is_none())
            .count();
        if fresh > unused {
            return Err(ReloadError::TooManyEndpoints);
        }

        let mut outcome = ReloadOutcome::default();
        let mut listener_endpoints = Vec::new();
        // New and revived endpoints: they warm at once.
        let mut warm = Vec::new();
        for (i, l) in new.listeners.iter().enumerate() {
            let mut ids = Vec::new();
            for addr in &l.resolved {
                let id = match table.find(i, *addr) {
                    Some(id) => {
                        if table.is_retired(id) {
                            table.revive(id);
                            outcome.added.push(*addr);
                            warm.push(id);
                        }
                        id
                    }
                    None => {
                        outcome.added.push(*addr);
                        let id = table.add(i, *addr).ok_or(ReloadError::TooManyEndpoints)?;
                        warm.push(id);
                        id
                    }
                };
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            listener_endpoints.push(ids);
        }
        let mut flush = Vec::new();
        for id in 0..table.len() {
            let listed = listener_endpoints.iter().any(|ids| ids.contains(&id));
            if !listed && !table.is_retired(id) {
                table.retire(id);
                outcome.retired.push(table.get(id).addr);
                flush.push((id, table.down_epoch(id)));
            }
        }
        self.reconfigure_pool(&new, &listener_endpoints, &warm, flush);

        let conn = &new.connection;
        let mut woken = Vec::new();
        self.shared
            .admission
            .set_limits(conn.pool.max_active, conn.pool.max_queued, &mut woken);
        for w in woken {
            self.shared.wake(w);
        }
        table.set_thresholds(conn.health_check.rise, conn.health_check.fall);
        if current.connection.health_check.enabled && !conn.health_check.enabled {
            table.mark_all_up();
        }
        *self
            .shared
            .health_config
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = conn.health_check.clone();
        self.shared
            .publish_live(LiveConfig::new(&new, listener_endpoints));
        *self.shutdown.lock().unwrap_or_else(|p| p.into_inner()) = new.shutdown.clone();
        *current = new;
        Ok(outcome)
    }
}

impl Reloader {
    /// The pool part of a reload, once for the proxy: shares of the total `max_idle` for
    /// the endpoints in service, the new timers; retired endpoints' idle connections (all
    /// of them when the pool is turned off) are closed and get no refill.
    fn reconfigure_pool(
        &self,
        new: &Config,
        listener_endpoints: &[Vec<usize>],
        warm: &[usize],
        mut flush: Vec<(usize, u64)>,
    ) {
        let table = &self.shared.endpoints;
        let pool_cfg = &new.connection.pool;
        let enabled = pool_cfg.enabled && pool_cfg.max_idle > 0;
        let mut serving: Vec<usize> = listener_endpoints.iter().flatten().copied().collect();
        serving.sort_unstable();
        serving.dedup();
        if !enabled {
            flush = (0..table.len())
                .map(|id| (id, table.down_epoch(id)))
                .collect();
        }
        let closed = self.shared.pool.reconfigure(
            &Reconfigure {
                endpoints: table.len(),
                serving: &serving,
                warm,
                flush: &flush,
                max_idle: if enabled { pool_cfg.max_idle } else { 0 },
                idle_timeout: pool_cfg.idle_timeout,
                retry_interval: pool_cfg.retry_interval,
            },
            std::time::Instant::now(),
        );
        for fd in closed {
            upstream::close_unused(fd);
        }
    }
}

/// The changes between `old` and `new` that a reload cannot apply.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.data_plane != new.data_plane {
        out.push(format!(
            "data_plane {} -> {}",
            old.data_plane.name(),
            new.data_plane.name()
        ));
    }
    let (a, b) = (old.workers.resolve(), new.workers.resolve());
    if a != b {
        out.push(format!("workers {a} -> {b}"));
    }
    if old.listeners.len() != new.listeners.len() {
        out.push(format!(
            "listeners: {} -> {} (listeners are bound at start)",
            old.listeners.len(),
            new.listeners.len()
        ));
    }
    for (i, (o, n)) in old.listeners.iter().zip(&new.listeners).enumerate() {
        if o.name != n.name {
            out.push(format!("listeners[{i}].name `{}` -> `{}`", o.name, n.name));
        }
        if o.listen != n.listen {
            out.push(format!(
                "listeners[{i}].listen {} -> {}",
                o.listen, n.listen
            ));
        }
    }
    let (ob, nb) = (&old.connection.buffer, &new.connection.buffer);
    if ob.size != nb.size {
        out.push(format!("connection.buffer.size {} -> {}", ob.size, nb.size));
    }
    if ob.max_pool_size != nb.max_pool_size {
        out.push(format!(
            "connection.buffer.max_pool_size {} -> {}",
            ob.max_pool_size, nb.max_pool_size
        ));
    }
    if old.connection.monitoring != new.connection.monitoring {
        out.push("connection.monitoring (the admin server is set up at start)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let base = "listeners:\n  - name: web\n    listen: 127.0.0.1:8080\n    upstreams: [127.0.0.1:9001]\nworkers: 2\n";
        match Config::parse(&format!("{base}{yaml}")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn live_changes_need_no_restart() {
        let old = config("");
        let new = config("connection:\n  pool:\n    max_active: 500\n    idle_timeout: 10s\n  health_check:\n    interval: 5s\nshutdown:\n  grace_period: 3s\n");
        assert!(needs_restart(&old, &new).is_empty());
    }

    #[test]
    fn listener_worker_buffer_and_admin_changes_are_refused() {
        let old = config("");
        let mut new = config(
            "connection:\n  buffer:\n    size: 8192\n  monitoring:\n    listen: 127.0.0.1:9999\n",
        );
        new.workers = "3".parse().expect("workers");
        new.listeners[0].listen = "127.0.0.1:8081".parse().expect("addr");
        let why = needs_restart(&old, &new).join("; ");
        for part in [
            "workers 2 -> 3",
            "listeners[0].listen",
            "buffer.size",
            "monitoring",
        ] {
            assert!(why.contains(part), "{part}: {why}");
        }
    }
}
