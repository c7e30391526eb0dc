//! A deliberately small HTTP/1.1 server side: one request per connection (`Connection:
//! close`), GET and HEAD only, a bounded request head read under a deadline. Enough for
//! Prometheus, kubelet probes and a browser, with nothing a malformed or slow client can
//! use to hold a thread or memory for long.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing a response may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response's connection lingers, swallowing what the client still sends.
const LINGER: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
}

/// Why a request was not read; each maps to the status the client gets (if any).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("admin client {peer}: request head over {MAX_HEAD} bytes")]
    TooLarge { peer: SocketAddr },
    #[error("admin client {peer}: malformed request: {what}")]
    Malformed {
        peer: SocketAddr,
        what: &'static str,
    },
    #[error("admin client {peer}: method not allowed")]
    MethodNotAllowed { peer: SocketAddr },
    #[error("admin client {peer}: no complete request within {REQUEST_DEADLINE:?}")]
    Timeout { peer: SocketAddr },
    #[error("admin client {peer}: closed before a complete request")]
    Closed { peer: SocketAddr },
    #[error("admin client {peer}: read failed: {source}")]
    Io { peer: SocketAddr, source: io::Error },
}

impl RequestError {
    /// The response status, or `None` when nobody is there to read one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::TooLarge { .. } => Some(431),
            RequestError::Malformed { .. } => Some(400),
            RequestError::MethodNotAllowed { .. } => Some(405),
            RequestError::Timeout { .. } => Some(408),
            RequestError::Closed { .. } | RequestError::Io { .. } => None,
        }
    }
}

/// Reads one request head from `stream` within [`REQUEST_DEADLINE`].
pub fn read_request(stream: &mut TcpStream, peer: SocketAddr) -> Result<Request, RequestError> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(request) = parse_head(&head, peer) {
            return request;
        }
        if head.len() > MAX_HEAD {
            return Err(RequestError::TooLarge { peer });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Timeout { peer });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|source| RequestError::Io { peer, source })?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(RequestError::Closed { peer }),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RequestError::Timeout { peer })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(RequestError::Io { peer, source }),
        }
    }
}

/// The request in `buf` (what has arrived so far), as [`read_request`] parses it:
/// `None` while the head is incomplete (no blank line yet). Public for the fuzzer.
pub fn parse_head(buf: &[u8], peer: SocketAddr) -> Option<Result<Request, RequestError>> {
    let end = head_end(buf)?;
    Some(parse(&buf[..end], peer))
}

/// Where the head ends (before the blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse(head: &[u8], peer: SocketAddr) -> Result<Request, RequestError> {
    let malformed = |what| RequestError::Malformed { peer, what };
    let text = std::str::from_utf8(head).map_err(|_| malformed("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("request line is not `METHOD TARGET VERSION`"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(malformed("version is not HTTP/1.0 or HTTP/1.1"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(malformed("target is not an absolute path"));
    }
    if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
        return Err(malformed("method is not a token"));
    }
    for line in lines {
        let Some((name, _)) = line.split_once(':') else {
            return Err(malformed("header line without a colon"));
        };
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(malformed("header name is not a token"));
        }
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return Err(RequestError::MethodNotAllowed { peer }),
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request { method, path })
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes `r` and closes the connection; a HEAD request gets the head only.
pub fn respond(stream: &mut TcpStream, r: &Response, head_only: bool) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(r.body.as_bytes())?;
    }
    stream.flush()?;
    // Half-close, then swallow what the client may still send for a moment: closing with
    // unread data would reset the connection and could destroy the response in flight.
    // Bounded in bytes and in time, so a client trickling data cannot hold the thread.
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn parses_a_get_and_strips_the_query() {
        let r = parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*",
            peer(),
        );
        assert_eq!(
            r.ok(),
            Some(Request {
                method: Method::Get,
                path: "/metrics".into()
            })
        );
    }

    #[test]
    fn rejects_what_is_not_a_request() {
        for bad in [
            &b"GET /metrics"[..],
            b"GET metrics HTTP/1.1",
            b"GET / HTTP/2.0",
            b"GET / HTTP/1.1\r\nno colon here",
            b"\xff\xfe / HTTP/1.1",
            b"get / HTTP/1.1",
            b"GET / HTTP/1.1 extra",
        ] {
            let e = parse(bad, peer()).expect_err("malformed");
            assert_eq!(e.status(), Some(400), "{:?}", String::from_utf8_lossy(bad));
        }
        let e = parse(b"POST / HTTP/1.1", peer()).expect_err("method");
        assert_eq!(e.status(), Some(405));
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
