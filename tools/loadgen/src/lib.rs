//! Load generator of the tests, the benchmarks and the examples: request/response, bulk and idle-session loads on tokio, run against the upstreams of `sssonector-loopback` (re-exported here).
//!
//! Each load runs on a tokio current-thread runtime created inside a blocking call, so the
//! generator costs one core at most: the machines we measure on have two, shared with the
//! proxy under test and the upstreams. The proxy itself does not depend on this crate:
//! `sssonector demo` drives the small blocking load of `sssonector-loopback` instead.

use std::io;
use std::time::Duration;

mod bulk;
mod idle;
mod request_response;

pub use bulk::{bulk, Bulk};
pub use idle::idle_sessions;
pub use request_response::{request_response, RequestResponse};
pub use sssonector_loopback::{
    fmt_latency, raise_nofile, BulkMode, BulkReport, Histogram, LatencySummary, RrReport,
    ServerKind, ServerStats, Upstream, NOFILE,
};

/// The request/response load of the compare bench (and of `examples/rr_load.rs`, which
/// runs it for outside tools): connections, and bytes per request.
pub const BENCH_RR_CONNECTIONS: usize = 50;
pub const BENCH_RR_PAYLOAD: usize = 64;
/// Idle sessions the compare bench opens to measure memory per session.
pub const BENCH_IDLE_SESSIONS: usize = 4000;

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn timed_out(what: &str, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} did not finish within {limit:?}"),
    )
}

/// Runs `fut` on a fresh current-thread runtime with an overall time limit.
fn block_on_limited<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    runtime()?.block_on(async {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| timed_out(what, limit))?
    })
}
