//! One worker thread: one io_uring, its listener sockets, buffer registry and connection table.

use std::net::SocketAddr;

use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::StatsSnapshot;

/// A running proxy: its bound addresses, its counters, and the way to stop it.
pub struct ProxyHandle {}

impl ProxyHandle {
    /// The bound address of each listener, in config order (useful when the config says port 0).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        todo!()
    }
    /// The counters as last published by the workers.
    pub fn stats(&self) -> StatsSnapshot {
        todo!()
    }
    /// Asks every worker to stop and waits for them.
    pub fn shutdown(self) -> Result<(), ProxyError> {
        todo!()
    }
    /// Waits until the workers stop (after `shutdown_trigger`, or on a fatal error).
    pub fn wait(self) -> Result<(), ProxyError> {
        todo!()
    }
    /// A handle that can stop the proxy from another thread (a signal handler thread).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        todo!()
    }
}

/// Stops the proxy from another thread.
#[derive(Clone)]
pub struct ShutdownTrigger {}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        todo!()
    }
}

/// Binds every listener, starts the workers, and returns once they are accepting.
pub fn start(_config: Config) -> Result<ProxyHandle, ProxyError> {
    todo!()
}
