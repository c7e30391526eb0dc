//! sssonector: a Linux TCP proxy whose data plane runs on io_uring.
//!
//! # Layout
//!
//! - [`config`]: YAML configuration (the spec's `connection:` section, listeners, workers),
//!   defaults and validation with key paths and line numbers.
//! - [`error`]: `thiserror` enums, tagged by side (client, upstream, internal).
//! - [`driver`]: the data plane behind one seam: io_uring (ring setup, kernel probe,
//!   submission backlog) and epoll (completions emulated on readiness), the start-up
//!   choice between them and the locked-memory plan; the only `unsafe` outside `buffer`.
//! - [`buffer`]: the per-worker buffer registry: one mmap'd region, registered as fixed
//!   buffers and published as a provided-buffer ring; slot ownership and the ENOBUFS wait list.
//! - [`admission`]: the global `max_active` limit and its first-come queue.
//! - [`upstream`]: endpoints (shared health table, balancing), the warm pool shared by every
//!   worker, and its keeper thread (watches idle connections, expires, retires, flushes).
//! - [`health`]: the prober thread (TCP connect with rise/fall thresholds).
//! - `session`: the session state machine: typed ids and ops, the table (slab with
//!   generations) and active list, admission, dials, the relay of both halves, teardown.
//! - `settings`: what a worker applies from the config, and what a reload hands it.
//! - [`worker`]: one thread, one ring, its listeners, its table; the completion loop.
//! - `shared`: the state the handle, the workers and the control threads share.
//! - [`proxy`]: [`start`], [`ProxyHandle`] and [`ShutdownTrigger`].
//! - [`metrics`]: counters and histograms each worker publishes, and the snapshot of them.
//! - [`telemetry`]: the Prometheus exposition: every metric described once, interval gauges.
//! - [`view`]: the read-only view of a running proxy that the control plane uses.
//! - [`admin`]: the admin HTTP server: `/metrics`, `/healthz`, `/readyz`, status page.
//! - [`healthcheck`]: `sssonector healthcheck`: one probe of a running proxy's admin
//!   server, exit 0/1, for a container HEALTHCHECK without a shell.
//! - [`signals`]: SIGTERM/SIGINT drain, SIGHUP reload.
//! - [`reload`]: applying a new configuration to the running proxy.
//! - [`logging`]: rate-limited logging of repeating errors.
//! - [`demo`]: `sssonector demo`: the proxy on the embedded default config, in front of a
//!   built-in echo upstream, under a short load.
//!
//! The upstreams and loads that exercise the proxy live apart from it, in the workspace's
//! `tools/`: `sssonector-loopback` (echo, sink and source upstreams and the demo's blocking
//! load), `sssonector-loadgen` (the tokio load generator of the tests and benches) and
//! `sssonector-bench` (the benchmark harness).
//!
//! [`start`] binds every listener, spawns the workers and returns a [`ProxyHandle`].

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod admission;
#[allow(unsafe_code)]
pub mod buffer;
pub mod config;
pub mod deadline;
pub mod demo;
#[allow(unsafe_code)]
pub mod driver;
pub mod error;
pub mod health;
pub mod healthcheck;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod shared;
pub mod signals;
pub mod telemetry;
pub mod upstream;
pub mod view;
pub mod worker;

pub use config::Config;
pub use error::{ConfigError, ProxyError};
pub use metrics::StatsSnapshot;
pub use proxy::{start, ProxyHandle, ShutdownTrigger};
pub use view::ProxyView;
