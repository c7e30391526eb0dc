//! The bulk load: one stream through the target, its byte counts checked end to end.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// One stream moving `bytes` through the target.
#[derive(Debug, Clone)]
pub struct Bulk {
    pub target: SocketAddr,
    pub mode: BulkMode,
    pub bytes: u64,
    /// Size of each write / read buffer.
    pub chunk: usize,
    pub timeout: Duration,
}

impl Bulk {
    pub fn new(target: SocketAddr, mode: BulkMode, bytes: u64) -> Bulk {
        Bulk {
            target,
            mode,
            bytes,
            chunk: 256 * 1024,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Runs one bulk stream; the byte counts are checked, so a short transfer is an error.
pub fn bulk(cfg: &Bulk) -> io::Result<BulkReport> {
    if cfg.chunk == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "chunk is 0"));
    }
    block_on_limited("bulk transfer", cfg.timeout, bulk_async(cfg))
}

async fn bulk_async(cfg: &Bulk) -> io::Result<BulkReport> {
    let mut s = TcpStream::connect(cfg.target).await?;
    let start = Instant::now();
    let (sent, received, confirmed) = match cfg.mode {
        BulkMode::Sink => {
            let sent = write_n(&mut s, cfg.bytes, cfg.chunk).await?;
            s.shutdown().await?;
            let mut ack = Vec::with_capacity(8);
            s.read_to_end(&mut ack).await?;
            let ack: [u8; 8] = ack.as_slice().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "sink answered {} bytes instead of its 8-byte count \
                         (does the proxy relay half-close?)",
                        ack.len()
                    ),
                )
            })?;
            (sent, 0, Some(u64::from_le_bytes(ack)))
        }
        BulkMode::Source => {
            s.write_all(&cfg.bytes.to_le_bytes()).await?;
            let got = read_n(&mut s, cfg.bytes, cfg.chunk).await?;
            (8, got, None)
        }
        BulkMode::Echo => {
            let (mut r, mut w) = s.split();
            let (sent, got) = tokio::try_join!(
                write_n(&mut w, cfg.bytes, cfg.chunk),
                read_n(&mut r, cfg.bytes, cfg.chunk)
            )?;
            (sent, got, None)
        }
    };
    let elapsed = start.elapsed();
    let report = BulkReport {
        mode: cfg.mode,
        bytes_sent: sent,
        bytes_received: received,
        confirmed,
        elapsed,
    };
    if report.transferred() != cfg.bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bulk {:?}: {} of {} bytes arrived",
                cfg.mode,
                report.transferred(),
                cfg.bytes
            ),
        ));
    }
    Ok(report)
}

async fn write_n<W: AsyncWrite + Unpin>(w: &mut W, n: u64, chunk: usize) -> io::Result<u64> {
    let buf: Vec<u8> = (0..chunk).map(|i| i as u8).collect();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk as u64) as usize;
        w.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    w.flush().await?;
    Ok(n)
}

/// Reads exactly `n` bytes; EOF before that is an error.
async fn read_n<R: AsyncRead + Unpin>(r: &mut R, n: u64, chunk: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; chunk];
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(chunk as u64) as usize;
        let k = r.read(&mut buf[..want]).await?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {got} of {n} bytes"),
            ));
        }
        got += k as u64;
    }
    Ok(got)
}
