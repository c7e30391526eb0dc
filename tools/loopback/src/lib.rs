//! Both ends of a loopback run, without tokio: the echo, sink and source upstreams, the small blocking load `sssonector demo` drives, the latency histogram and what a load reports.
//!
//! The proxy's binary uses this crate for `sssonector demo`; the tests, the benches and the
//! tokio load generator (`sssonector-loadgen`) use the same upstreams, so there is one echo,
//! one sink and one source server in the project.
//!
//! Each upstream is one thread running one event loop (mio), so it costs one core at most:
//! the machines we measure on have two, shared with the proxy under test and the load
//! generator. Per-connection memory stays small so 4000 idle sessions stay cheap.
//!
//! Protocols of the upstreams (loopback only, bound to `127.0.0.1:0`):
//! - echo: writes back what it reads; on EOF it half-closes its side.
//! - sink: discards what it reads; on EOF it writes the byte count it received (8 bytes,
//!   little endian) and closes, so a sender can confirm delivery end to end.
//! - source: reads an 8-byte little-endian count N, writes N bytes, closes. The client asks
//!   first so the source never writes into a connection no client owns yet (a proxy's warm
//!   pooled upstream connection would otherwise look like a server that speaks first).
//!
//! [`echo_blocking`] is the echo protocol on one blocking connection, for the
//! thread-per-connection servers of tests that inject faults.

pub mod blocking;
mod histogram;
mod nofile;
mod report;
mod upstream;

pub use blocking::echo_blocking;
pub use histogram::{fmt_latency, Histogram, LatencySummary};
pub use nofile::{raise_nofile, NOFILE};
pub use report::{check_response, fill_request, BulkMode, BulkReport, RrReport};
pub use upstream::{ServerKind, ServerStats, Upstream};

/// Bytes in a MiB, for throughput figures.
pub const MIB: f64 = 1024.0 * 1024.0;
