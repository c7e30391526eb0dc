//! [`ProxyHandle`], what [`super::start`] returns, and [`ShutdownTrigger`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::Shared;
use crate::admin::AdminServer;
use crate::config::MonitoringConfig;
use crate::error::ProxyError;
use crate::metrics::StatsSnapshot;
use crate::reload::Reloader;
use crate::view::ProxyView;

/// A running proxy: its bound addresses, its counters, and the way to stop it.
pub struct ProxyHandle {
    pub(super) threads: Vec<JoinHandle<Result<(), ProxyError>>>,
    pub(super) prober: Option<JoinHandle<()>>,
    pub(super) keeper: Option<JoinHandle<()>>,
    pub(super) shared: Arc<Shared>,
    pub(super) view: ProxyView,
    pub(super) admin: Option<AdminServer>,
    pub(super) monitoring: MonitoringConfig,
    pub(super) reloader: Arc<Reloader>,
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
    pub(super) shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Drain, first step: `/readyz` fails so that load balancers stop routing here;
    /// everything else goes on.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Drain, second step: listeners close, the warm pool closes (its idle connections
    /// are closed and nothing joins it any more), sessions in flight finish; each worker
    /// stops when its last session ends.
    pub fn close_listeners(&self) {
        self.begin_drain();
        self.shared.close_listeners.store(true, Ordering::Release);
        self.shared.pool.close();
        self.shared.wake_all();
    }

    /// Stops at once: every session is closed.
    pub fn trigger(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
    }
}
