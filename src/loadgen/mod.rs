//! Load generator behind `sssonector demo` and the benchmarks: request/response, bulk and idle-session loads, and the echo, sink and source upstreams they run against.
//!
//! Each load runs on a tokio current-thread runtime created inside a blocking call, so the
//! generator costs one core at most: the machines we measure on have two, shared with the
//! proxy under test and the upstreams. Each upstream server runs on its own thread for the
//! same reason, and keeps per-connection memory small so 4000 idle sessions stay cheap.
//!
//! Protocols of the built-in upstreams (loopback only, bound to `127.0.0.1:0`):
//! - echo: writes back what it reads; on EOF it half-closes its side.
//! - sink: discards what it reads; on EOF it writes the byte count it received (8 bytes,
//!   little endian) and closes, so a sender can confirm delivery end to end.
//! - source: reads an 8-byte little-endian count N, writes N bytes, closes. The client asks
//!   first so the source never writes into a connection no client owns yet (a proxy's warm
//!   pooled upstream connection would otherwise look like a server that speaks first).

mod bulk;
mod histogram;
mod idle;
mod request_response;
mod upstream;

pub use bulk::{bulk, Bulk, BulkMode, BulkReport};
pub use histogram::{fmt_latency, Histogram, LatencySummary};
pub use idle::idle_sessions;
pub use request_response::{request_response, RequestResponse, RrReport};
pub use upstream::{ServerKind, ServerStats, Upstream};

use std::io;
use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;

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
