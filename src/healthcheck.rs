//! `sssonector healthcheck`: one request to a running proxy's admin server (`/healthz`, or
//! `/readyz`), with a short timeout, answered as exit 0 or 1 and one line naming the
//! address and the cause. It is the container `HEALTHCHECK`: the runtime image has no
//! shell and no curl.
//!
//! The admin address comes from `--admin-listen`, else from the config file's
//! `connection.monitoring.listen`, else the default. Only that key is read from the file:
//! the rest is not validated and no upstream name is resolved, so a probe never fails
//! (or waits on DNS) for a reason that is not the admin server's.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{parse_listen, DEFAULT_ADMIN_LISTEN};

/// The most of an answer that is read: the probes answer a few lines.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a probe failed; each names the URL it asked.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("cannot read the admin address from {path}: {cause}")]
    Config { path: String, cause: String },
    #[error("http://{addr}{path}: cannot connect: {source} (is the proxy running, and its admin server on this address?)")]
    Connect {
        addr: SocketAddr,
        path: &'static str,
        source: std::io::Error,
    },
    #[error("http://{addr}{path}: no complete answer within {timeout:?}: {cause}")]
    Io {
        addr: SocketAddr,
        path: &'static str,
        timeout: Duration,
        cause: String,
    },
    #[error("http://{addr}{path}: malformed answer: {what}")]
    Malformed {
        addr: SocketAddr,
        path: &'static str,
        what: String,
    },
    #[error("http://{addr}{path}: {status}: {body}")]
    Failing {
        addr: SocketAddr,
        path: &'static str,
        status: u16,
        body: String,
    },
}

/// What is asked: liveness (`/healthz`) or readiness (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Health,
    Ready,
}

impl Probe {
    pub fn path(self) -> &'static str {
        match self {
            Probe::Health => "/healthz",
            Probe::Ready => "/readyz",
        }
    }
}

/// Where to reach the admin server: `flag` (`--admin-listen`), else the file's
/// `connection.monitoring.listen`, else the default. An unspecified address (`0.0.0.0`,
/// `[::]`) is reached on loopback.
pub fn admin_address(
    config: Option<&Path>,
    flag: Option<&str>,
) -> Result<SocketAddr, HealthcheckError> {
    let listen = match (flag, config) {
        (Some(addr), _) => parse_listen(addr).map_err(|cause| HealthcheckError::Config {
            path: "--admin-listen".into(),
            cause,
        })?,
        (None, Some(path)) => listen_in_file(path)?,
        (None, None) => DEFAULT_ADMIN_LISTEN,
    };
    Ok(reachable(listen))
}

/// `connection.monitoring.listen` of the file, or the default when it has none.
fn listen_in_file(path: &Path) -> Result<SocketAddr, HealthcheckError> {
    let fail = |cause: String| HealthcheckError::Config {
        path: path.display().to_string(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| fail(format!("not YAML: {e}")))?;
    match &doc["connection"]["monitoring"]["listen"] {
        serde_yaml::Value::Null => Ok(DEFAULT_ADMIN_LISTEN),
        serde_yaml::Value::String(s) => {
            parse_listen(s).map_err(|m| fail(format!("connection.monitoring.listen: {m}")))
        }
        other => Err(fail(format!(
            "connection.monitoring.listen is not an address: {other:?}"
        ))),
    }
}

fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Asks `probe` of the admin server at `addr`; everything (connect, request, answer) must
/// be done within `timeout`. Returns the first line of a 200 answer.
pub fn check(
    addr: SocketAddr,
    probe: Probe,
    timeout: Duration,
) -> Result<String, HealthcheckError> {
    let path = probe.path();
    let deadline = Instant::now() + timeout;
    let io = |e: std::io::Error| HealthcheckError::Io {
        addr,
        path,
        timeout,
        // A socket timeout reads as EAGAIN ("Resource temporarily unavailable").
        cause: match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => e.to_string(),
        },
    };
    let mut conn = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HealthcheckError::Connect { addr, path, source })?;
    // A timeout of zero is refused by set_*_timeout: the deadline may have passed already.
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    conn.set_write_timeout(Some(left())).map_err(io)?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    let mut reader = (&conn).take(MAX_ANSWER);
    let mut buf = [0u8; 4096];
    loop {
        conn.set_read_timeout(Some(left())).map_err(io)?;
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let (status, body) =
        parse_answer(&raw).map_err(|what| HealthcheckError::Malformed { addr, path, what })?;
    let body = body.trim().replace('\n', "; ");
    if status == 200 {
        Ok(body)
    } else {
        Err(HealthcheckError::Failing {
            addr,
            path,
            status,
            body,
        })
    }
}

/// The status code and body of an HTTP/1.x answer.
fn parse_answer(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    if text.is_empty() {
        return Err("the connection closed without an answer".into());
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {} bytes", raw.len()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(parse_answer(ok), Ok((200, "ok\n".into())));
        let bad = b"HTTP/1.1 503 Service Unavailable\r\n\r\ndraining";
        assert_eq!(parse_answer(bad).map(|a| a.0), Ok(503));
        assert!(parse_answer(b"").is_err());
        assert!(parse_answer(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn an_unspecified_address_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9090".parse().expect("addr");
        assert_eq!(reachable(any), "127.0.0.1:9090".parse().expect("addr"));
        let any6: SocketAddr = "[::]:9090".parse().expect("addr");
        assert_eq!(reachable(any6), "[::1]:9090".parse().expect("addr"));
    }

    #[test]
    fn the_address_comes_from_the_flag_then_the_file() {
        let dir = std::env::temp_dir().join(format!("sssonector-hc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "connection:\n  monitoring:\n    listen: 0.0.0.0:9191\n",
        )
        .expect("write");
        let got = admin_address(Some(&file), None).expect("from the file");
        assert_eq!(got, "127.0.0.1:9191".parse().expect("addr"));
        let got = admin_address(Some(&file), Some("127.0.0.2:7")).expect("flag");
        assert_eq!(got, "127.0.0.2:7".parse().expect("addr"));
        std::fs::write(&file, "listeners: []\n").expect("write");
        assert_eq!(
            admin_address(Some(&file), None).expect("default"),
            DEFAULT_ADMIN_LISTEN
        );
        let missing = dir.join("missing.yaml");
        let err = admin_address(Some(&missing), None).expect_err("no file");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
