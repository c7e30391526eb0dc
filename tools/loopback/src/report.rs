//! What a load sends and measured: the request/response load's requests and their check, and the reports of the request/response and bulk loads, blocking or not.

use std::io;
use std::time::Duration;

use crate::{LatencySummary, MIB};

/// What a request/response run measured.
#[derive(Debug, Clone)]
pub struct RrReport {
    pub connections: usize,
    pub requests: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub elapsed: Duration,
    pub latency: LatencySummary,
}

impl RrReport {
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Which way a bulk stream flows, and what the target must be in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkMode {
    /// Send `bytes` to a sink, half-close, wait for the sink's byte count.
    Sink,
    /// Ask a source for `bytes` and read them.
    Source,
    /// Send `bytes` to an echo server while reading them back.
    Echo,
}

/// What a bulk run measured.
#[derive(Debug, Clone)]
pub struct BulkReport {
    pub mode: BulkMode,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The byte count the sink acknowledged (sink mode only).
    pub confirmed: Option<u64>,
    pub elapsed: Duration,
}

impl BulkReport {
    /// Bytes that crossed the proxy in the measured direction.
    pub fn transferred(&self) -> u64 {
        match self.mode {
            BulkMode::Sink => self.confirmed.unwrap_or(0),
            BulkMode::Source | BulkMode::Echo => self.bytes_received,
        }
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.transferred() as f64 / MIB / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Request `n` of connection `id` of a request/response load: bytes that differ per
/// connection and per request, so a misrouted or stale reply is caught.
pub fn fill_request(req: &mut [u8], id: u64, n: u64) {
    let seed = id.wrapping_mul(131).wrapping_add(n);
    for (k, b) in req.iter_mut().enumerate() {
        *b = seed.wrapping_add(k as u64) as u8;
    }
}

/// The echo of request `n` of connection `id` must be the request.
pub fn check_response(req: &[u8], resp: &[u8], id: u64, n: u64) -> io::Result<()> {
    if resp == req {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("connection {id}: response {n} differs from its request"),
    ))
}
