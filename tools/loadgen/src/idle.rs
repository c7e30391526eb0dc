//! Idle sessions: connections opened (each with one echo round trip) and then left open.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::*;

/// Connections opened at once while establishing idle sessions: enough to be quick, few
/// enough not to overflow a listen backlog (nginx's default is 511).
const IDLE_CONCURRENCY: usize = 64;

/// Opens `count` connections to an echo target, sends one small message through each and
/// reads it back (so each session is established end to end, upstream included), and
/// returns the open sockets. Drop them to close the sessions.
pub fn idle_sessions(
    target: SocketAddr,
    count: usize,
    timeout: Duration,
) -> io::Result<Vec<std::net::TcpStream>> {
    block_on_limited("opening idle sessions", timeout, async move {
        let mut out = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        let mut next = 0usize;
        loop {
            while next < count && tasks.len() < IDLE_CONCURRENCY {
                tasks.spawn(open_session(target, next));
                next += 1;
            }
            match tasks.join_next().await {
                Some(joined) => {
                    let s = joined
                        .map_err(|e| io::Error::other(format!("session task failed: {e}")))??;
                    // Leave the runtime's reactor: the socket must outlive this runtime.
                    out.push(s.into_std()?);
                }
                None => break,
            }
        }
        Ok(out)
    })
}

async fn open_session(target: SocketAddr, id: usize) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let msg = format!("hello {id:08}\n");
    s.write_all(msg.as_bytes()).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("session {id}: echo differs from what was sent"),
        ));
    }
    Ok(s)
}
