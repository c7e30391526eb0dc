//! `sssonector demo`: the proxy on the embedded default config in front of a built-in echo upstream.
//!
//! It starts the echo upstream, points the default config's listener at it, drives a short
//! load (request/response, then one bulk stream; the blocking load of `sssonector-loopback`,
//! std threads, so the proxy's binary needs no async runtime), prints what the generator measured next to
//! the proxy's own counters, and keeps the proxy listening so a person can `nc` into it,
//! until Ctrl-C or until `duration` (counted from the demo's start) has elapsed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::StatsSnapshot;
use sssonector_loopback::{blocking, ServerKind, Upstream};

const RR_CONNECTIONS: usize = 32;
const RR_PAYLOAD: usize = 64;
const RR_DURATION: Duration = Duration::from_secs(3);
const BULK_BYTES: u64 = 256 * 1024 * 1024;

fn internal(what: &str) -> impl FnOnce(io::Error) -> ProxyError + '_ {
    move |source| ProxyError::Internal {
        what: what.to_string(),
        source,
    }
}

/// The default config with its listener pointed at `upstream`.
pub fn demo_config(upstream: SocketAddr) -> Result<Config, ProxyError> {
    let mut config = Config::parse(crate::config::DEMO_CONFIG)?;
    let listener = config.listeners.first_mut().ok_or_else(|| {
        ProxyError::Config(crate::error::ConfigError::Invalid {
            key: "listeners".into(),
            line: None,
            message: "the demo config names no listener".into(),
        })
    })?;
    listener.upstreams = vec![upstream.to_string()];
    listener.resolved = vec![upstream];
    Ok(config)
}

/// Runs the demo; `duration` stops it by itself, otherwise it runs until Ctrl-C.
pub fn run(duration: Option<Duration>) -> Result<(), ProxyError> {
    let started = Instant::now();
    // Install the handler first, so Ctrl-C during the load stops the demo cleanly after it
    // (the load is bounded) instead of killing it with the proxy half way through.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(internal("cannot install signal handlers"))?;

    let echo = Upstream::start(ServerKind::Echo).map_err(internal("cannot start echo upstream"))?;
    let config = demo_config(echo.addr())?;
    let handle = crate::start(config)?;
    let addr = handle
        .listen_addrs()
        .first()
        .map(|(_, a)| *a)
        .ok_or_else(|| internal("proxy reports no listener")(io::ErrorKind::NotFound.into()))?;
    println!("sssonector demo");
    println!("  proxy     {addr}  ->  echo upstream {}", echo.addr());
    println!();

    let before = handle.stats();
    let load = drive_load(addr);
    // Workers publish their counters every 100 ms: wait for the last of the load to show.
    std::thread::sleep(Duration::from_millis(250));
    let after = handle.stats();
    match &load {
        Ok(out) => print!("{out}"),
        Err(e) => println!("  load failed: {e}"),
    }
    print_stats(&before, &after);

    println!();
    println!("The proxy keeps listening on {addr} in front of the echo upstream:");
    println!(
        "  nc {} {}    (type a line, it comes back)",
        addr.ip(),
        addr.port()
    );
    match duration {
        Some(d) => println!(
            "Stops after {} in all, or on Ctrl-C.",
            crate::config::duration::format(d)
        ),
        None => println!("Ctrl-C stops it."),
    }

    let deadline = duration.map(|d| started + d);
    loop {
        if signals.pending().next().is_some() {
            println!("\nstopping");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = handle.shutdown();
    echo.stop();
    result?;
    load.map(|_| ()).map_err(internal("demo load"))
}

/// Runs the request/response and bulk loads and renders what they measured.
fn drive_load(addr: SocketAddr) -> io::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();

    let r = blocking::request_response(addr, RR_CONNECTIONS, RR_PAYLOAD, RR_DURATION)?;
    let _ = writeln!(
        out,
        "  request/response  {} connections x {} B, {:.1} s",
        r.connections,
        RR_PAYLOAD,
        r.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "    requests        {}  ({:.0} req/s)",
        r.requests,
        r.requests_per_sec()
    );
    let _ = writeln!(
        out,
        "    bytes           {} sent, {} received",
        r.bytes_sent, r.bytes_received
    );
    let _ = writeln!(out, "    latency         {}", r.latency);

    let b = blocking::bulk_echo(addr, BULK_BYTES)?;
    let _ = writeln!(
        out,
        "  bulk (echoed)     {} MiB each way in {:.2} s: {:.0} MiB/s",
        BULK_BYTES / (1024 * 1024),
        b.elapsed.as_secs_f64(),
        b.mib_per_sec()
    );
    Ok(out)
}

fn print_stats(before: &StatsSnapshot, after: &StatsSnapshot) {
    let (b, a) = (&before.total, &after.total);
    println!("  proxy counters (during the load / total)");
    println!(
        "    sessions        {} / {}   (active now {})",
        a.sessions_total.saturating_sub(b.sessions_total),
        a.sessions_total,
        a.sessions_active
    );
    println!(
        "    bytes c->u      {} / {}",
        a.bytes_client_to_upstream
            .saturating_sub(b.bytes_client_to_upstream),
        a.bytes_client_to_upstream
    );
    println!(
        "    bytes u->c      {} / {}",
        a.bytes_upstream_to_client
            .saturating_sub(b.bytes_upstream_to_client),
        a.bytes_upstream_to_client
    );
    println!(
        "    buffers         {} slots, {} in use, max {} in use, {} waits, registered: {}",
        a.buffer_slots_total,
        a.buffer_slots_in_use,
        a.buffer_slots_in_use_max,
        a.buffer_waits,
        after.buffers_registered
    );
    println!(
        "    errors          connect {} (timeouts {}), client {}, upstream {}",
        a.upstream_connect_errors, a.upstream_connect_timeouts, a.client_errors, a.upstream_errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_points_at_the_upstream() {
        let up: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        let c = demo_config(up).unwrap();
        assert_eq!(c.listeners[0].name, "demo");
        assert_eq!(c.listeners[0].listen.port(), 0);
        assert_eq!(c.listeners[0].resolved, vec![up]);
        assert_eq!(c.listeners[0].upstreams, vec![up.to_string()]);
    }

    /// The demo's load straight against the echo upstream: it must finish well within the
    /// ~10 s the demo allows itself on two cores.
    #[test]
    fn demo_load_runs_against_echo() {
        let echo = Upstream::start(ServerKind::Echo).unwrap();
        let t = Instant::now();
        let out = drive_load(echo.addr()).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(out.contains("req/s") && out.contains("MiB/s"), "{out}");
        println!("{out}");
    }
}
