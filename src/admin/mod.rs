//! The admin HTTP server on `connection.monitoring.listen`: `/metrics`, `/healthz`,
//! `/readyz` and the status page at `/`.
//!
//! It runs off the data plane: one event-loop thread ([`front`]) that accepts and reads
//! every request head (no thread is spent on a client before its head is in) and answers
//! `/healthz`, `/readyz` and errors itself; one short-lived thread per `/metrics` or
//! status page request (at most [`MAX_CONNECTIONS`] at once; past that a client gets a
//! 503); and a sampler thread that closes a metrics window every `metrics_interval`. It
//! only reads what the workers publish ([`ProxyView`]), so a slow or hostile admin client
//! cannot stall a worker.

pub mod front;
pub mod http;
pub mod routes;
pub mod status_page;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::MonitoringConfig;
use crate::error::ProxyError;
use crate::telemetry::{WindowSampler, SAMPLER_POLL};
use crate::view::ProxyView;

/// `/metrics` and status page requests served at once (each on a thread); more get a 503.
pub const MAX_CONNECTIONS: usize = 32;

/// What the request threads share.
pub struct AdminState {
    pub view: ProxyView,
    pub sampler: WindowSampler,
    pub metrics_enabled: bool,
    pub metrics_interval: Duration,
}

/// A running admin server; [`AdminServer::stop`] (or dropping it) stops it.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AdminServer {
    pub fn start(view: ProxyView, cfg: &MonitoringConfig) -> Result<AdminServer, ProxyError> {
        let bind_err = |source| ProxyError::Bind {
            name: "admin (connection.monitoring.listen)".into(),
            addr: cfg.listen,
            source,
        };
        let listener = TcpListener::bind(cfg.listen).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let state = Arc::new(AdminState {
            view,
            sampler: WindowSampler::default(),
            metrics_enabled: cfg.enabled,
            metrics_interval: cfg.metrics_interval,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let spawn_err = |source| ProxyError::Internal {
            what: "cannot spawn an admin thread".into(),
            source,
        };
        let mut threads = Vec::new();
        let (st, sp) = (state.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("sssonector-admin".into())
                .spawn(move || front::run(listener, &st, &sp))
                .map_err(spawn_err)?,
        );
        if cfg.enabled {
            let (st, sp) = (state, stop.clone());
            let spawned = std::thread::Builder::new()
                .name("sssonector-metrics".into())
                .spawn(move || sample_loop(&st, &sp));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    AdminServer {
                        addr,
                        stop,
                        threads,
                    }
                    .stop();
                    return Err(spawn_err(e));
                }
            }
        }
        tracing::info!(%addr, metrics = cfg.enabled, "admin server listening");
        Ok(AdminServer {
            addr,
            stop,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking accept; an unspecified bind address is reached on loopback.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_and_join();
        }
    }
}

fn sample_loop(state: &AdminState, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            state.sampler.sample(&state.view.stats(), now);
            next = now + state.metrics_interval;
        }
        std::thread::sleep(SAMPLER_POLL.min(next.saturating_duration_since(now)));
    }
}
