//! Loads and an echo on blocking sockets and std threads: the short load of `sssonector demo`, and the echo loop of thread-per-connection servers.
//!
//! Each load checks every byte it gets back, like the tokio load generator's; every socket
//! operation is bounded by a timeout, so a proxy that stalls fails the load instead of
//! hanging it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{check_response, fill_request, BulkMode, BulkReport, Histogram, RrReport};

/// Bounds each connect, read and write of the loads here.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 256 * 1024;

/// The echo protocol on one blocking connection: writes back what it reads until EOF, then
/// half-closes. Errors (a reset, the caller's read timeout) end it quietly.
pub fn echo_blocking(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    // Small requests must leave at once, not wait for Nagle.
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// `connections` threads, each with one connection to an echo `target`, sending a
/// `payload`-byte request and reading its echo, one in flight per connection, for
/// `duration` (counted once every connection is established). Every response is checked
/// against its request; a failed connection fails the run.
pub fn request_response(
    target: SocketAddr,
    connections: usize,
    payload: usize,
    duration: Duration,
) -> io::Result<RrReport> {
    if connections == 0 || payload == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "request/response needs at least one connection and a non-empty payload",
        ));
    }
    let streams = (0..connections)
        .map(|_| connect(target))
        .collect::<io::Result<Vec<_>>>()?;
    // The clock starts once every connection is established; starting 32 threads is
    // part of the measured time, as a tokio runtime's spawns would be.
    let start = Instant::now();
    let deadline = start + duration;
    let mut threads = Vec::with_capacity(connections);
    for (id, s) in streams.into_iter().enumerate() {
        threads.push(
            std::thread::Builder::new()
                .name(format!("rr-{id}"))
                .stack_size(128 * 1024)
                .spawn(move || rr_connection(s, id as u64, payload, deadline))?,
        );
    }
    let mut hist = Histogram::new();
    let mut requests = 0;
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok((n, h))) => {
                requests += n;
                hist.merge(&h);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(io::Error::other("a load thread panicked"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let bytes = requests * payload as u64;
    Ok(RrReport {
        connections,
        requests,
        bytes_sent: bytes,
        bytes_received: bytes,
        elapsed: start.elapsed(),
        latency: hist.summary(),
    })
}

fn rr_connection(
    mut s: TcpStream,
    id: u64,
    payload: usize,
    deadline: Instant,
) -> io::Result<(u64, Histogram)> {
    let mut req = vec![0u8; payload];
    let mut resp = vec![0u8; payload];
    let mut hist = Histogram::new();
    let mut done: u64 = 0;
    while Instant::now() < deadline {
        fill_request(&mut req, id, done);
        let t = Instant::now();
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        hist.record(t.elapsed().as_nanos() as u64);
        check_response(&req, &resp, id, done)?;
        done += 1;
    }
    Ok((done, hist))
}

/// One stream of `bytes` through an echo `target`: a thread writes them and half-closes
/// while this one reads the echo to its end; the bytes must come back exactly.
pub fn bulk_echo(target: SocketAddr, bytes: u64) -> io::Result<BulkReport> {
    let s = connect(target)?;
    let mut w = s.try_clone()?;
    let start = Instant::now();
    let writer = std::thread::Builder::new()
        .name("bulk-writer".into())
        .spawn(move || -> io::Result<u64> {
            let buf: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
            let mut left = bytes;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                w.write_all(&buf[..k])?;
                left -= k as u64;
            }
            w.shutdown(Shutdown::Write)?;
            Ok(bytes)
        })?;
    let received = read_checked(&s, bytes);
    if received.is_err() {
        // Unblock the writer (it may be stuck on a full socket) before joining it.
        let _ = s.shutdown(Shutdown::Both);
    }
    let sent = writer
        .join()
        .map_err(|_| io::Error::other("the bulk writer panicked"))?;
    let received = received?;
    let sent = sent?;
    Ok(BulkReport {
        mode: BulkMode::Echo,
        bytes_sent: sent,
        bytes_received: received,
        confirmed: None,
        elapsed: start.elapsed(),
    })
}

/// Reads to EOF; the stream must be exactly `n` bytes of the writer's pattern.
fn read_checked(mut s: &TcpStream, n: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    // Byte i of the stream is `i as u8` (CHUNK is a multiple of 256): one slice of this,
    // at the stream's offset mod 256, is what any read must equal.
    let pattern: Vec<u8> = (0..CHUNK + 256).map(|i| i as u8).collect();
    let mut got = 0u64;
    loop {
        let k = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let at = (got % 256) as usize;
        if buf[..k] != pattern[at..at + k] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bulk echo: bytes {got}..{} came back wrong", got + k as u64),
            ));
        }
        got += k as u64;
    }
    if got != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bulk echo: {got} of {n} bytes came back"),
        ));
    }
    Ok(got)
}
