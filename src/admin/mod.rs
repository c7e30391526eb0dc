//! The admin HTTP server on `connection.monitoring.listen`: `/metrics`, `/healthz`,
//! `/readyz` and the status page at `/`.
//!
//! It runs off the data plane: an accept thread, one short-lived thread per request (at
//! most [`MAX_CONNECTIONS`] at once; past that a client gets a 503 at once), and a
//! sampler thread that closes a metrics window every `metrics_interval`. It only reads
//! what the workers publish ([`ProxyView`]), so a slow or hostile admin client cannot
//! stall a worker.

pub mod http;
pub mod routes;
pub mod status_page;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::MonitoringConfig;
use crate::error::ProxyError;
use crate::telemetry::{WindowSampler, SAMPLER_POLL};
use crate::view::ProxyView;

/// Requests served at once; more wait in the kernel's backlog or get a 503.
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
                .spawn(move || accept_loop(&listener, &st, &sp))
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

fn accept_loop(listener: &TcpListener, state: &Arc<AdminState>, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    let mut failures = crate::logging::RateLimited::new(Duration::from_secs(10));
    for conn in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: keep serving, say so at most once per period, and
                // let the condition pass instead of spinning on it.
                if let Some(repeated) = failures.hit() {
                    tracing::warn!(repeated, "admin: accept failed: {e}");
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let r = http::Response::text(503, "admin server busy\n");
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = std::io::Write::write_all(&mut stream, response_bytes(&r).as_bytes());
            continue;
        }
        let (state, busy2) = (state.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("sssonector-admin-req".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve(&mut stream, peer, &state);
                busy2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A minimal response written straight from the accept thread (no thread to spare).
fn response_bytes(r: &http::Response) -> String {
    format!(
        "HTTP/1.1 {} Busy\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    )
}

fn serve(stream: &mut TcpStream, peer: SocketAddr, state: &AdminState) {
    match http::read_request(stream, peer) {
        Ok(req) => {
            let r = routes::route(state, &req);
            if let Err(e) = http::respond(stream, &r, req.method == http::Method::Head) {
                tracing::debug!(%peer, "admin client: write failed: {e}");
            }
        }
        Err(e) => {
            tracing::debug!("{e}");
            if let Some(status) = e.status() {
                let r = http::Response::text(status, format!("{e}\n"));
                let _ = http::respond(stream, &r, false);
            }
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
