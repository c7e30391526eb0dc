//! Semantic checks after parsing: ranges, cross-key rules, what the workers can map, and
//! upstream resolution. Each error names its key and, when the config came from text,
//! its line; a cross-key rule blames the key the file actually sets.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::duration::format as go;
use super::{
    invalid, locate, BufferConfig, Config, ConfigError, HealthCheckConfig, ListenerConfig,
    MonitoringConfig, PoolConfig, Source, Workers, CLI_LISTENER, DEFAULT_ADMIN_LISTEN,
    MAX_BUFFER_SIZE, MAX_IN_FLIGHT, MAX_NAME_LEN, MIN_BUFFER_SIZE,
};
use crate::buffer::MAX_SLOTS;

/// The checks, with the text (for lines) and the listener the flags made (for flag names).
pub struct Validator<'a> {
    text: Option<&'a str>,
    cli_listener: Option<usize>,
    admin_flag: bool,
}

impl<'a> Validator<'a> {
    pub fn new(source: &'a Source) -> Validator<'a> {
        Validator {
            text: source.text.as_deref(),
            cli_listener: source.cli_listener,
            admin_flag: source.admin_flag,
        }
    }

    /// Every check, then DNS last, so a typo is reported without a lookup.
    pub fn config(&self, c: &mut Config) -> Result<(), ConfigError> {
        self.workers(c.workers)?;
        self.pool(&c.connection.pool)?;
        self.health_check(&c.connection.health_check)?;
        self.buffer(&c.connection.buffer, c.workers)?;
        self.monitoring(&c.connection.monitoring)?;
        self.listeners(&c.listeners)?;
        self.admin_conflict(&c.connection.monitoring, &c.listeners)?;
        for (i, l) in c.listeners.iter_mut().enumerate() {
            l.resolved = self.resolve(i, &l.upstreams)?;
        }
        Ok(())
    }

    pub fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.text.and_then(|t| locate::line_of(t, key));
        invalid(key, line, message)
    }

    /// Whether the file spells `key` out (as opposed to taking its default).
    fn present(&self, key: &str) -> bool {
        self.text.is_some_and(|t| locate::is_present(t, key))
    }

    /// Key of a listener field; the flag for the listener built from flags.
    pub fn listener_key(&self, i: usize, field: &str) -> String {
        if self.cli_listener == Some(i) {
            match field {
                "listen" => "--listen".to_string(),
                "name" => format!("listeners[{i}].name (`{CLI_LISTENER}`, from --listen)"),
                _ => "--upstream".to_string(),
            }
        } else {
            format!("listeners[{i}].{field}")
        }
    }

    fn nonzero(&self, key: &str, d: Duration, why: &str) -> Result<(), ConfigError> {
        if d.is_zero() {
            return Err(self.err(
                key,
                format!("a non-zero duration expected (e.g. `500ms`, `5s`, `5m`), got 0: {why}"),
            ));
        }
        Ok(())
    }

    fn range(&self, key: &str, v: usize, lo: usize, hi: usize) -> Result<(), ConfigError> {
        if !(lo..=hi).contains(&v) {
            return Err(self.err(key, format!("{lo}..{hi} expected, got {v}")));
        }
        Ok(())
    }

    fn workers(&self, w: Workers) -> Result<(), ConfigError> {
        match w {
            Workers::Auto => Ok(()),
            Workers::Count(n) => Workers::count(n as u64)
                .map(|_| ())
                .map_err(|m| self.err("workers", m)),
        }
    }

    fn pool(&self, p: &PoolConfig) -> Result<(), ConfigError> {
        let k = "connection.pool";
        self.nonzero(
            &format!("{k}.idle_timeout"),
            p.idle_timeout,
            "pooled connections need a lifetime; to keep none, set `max_idle: 0` \
             (quiet sessions are `connection.session.idle_timeout`)",
        )?;
        self.nonzero(
            &format!("{k}.retry_interval"),
            p.retry_interval,
            "it spaces the rounds of dial attempts",
        )?;
        self.nonzero(
            &format!("{k}.connect_timeout"),
            p.connect_timeout,
            "a dial attempt needs time to complete",
        )?;
        self.nonzero(
            &format!("{k}.queue_timeout"),
            p.queue_timeout,
            "to queue no client, set `max_queued: 0`",
        )?;
        if p.max_active == 0 {
            return Err(self.err(
                &format!("{k}.max_active"),
                "at least 1 expected, got 0 (it limits active sessions; 0 would refuse all)",
            ));
        }
        if p.max_idle > p.max_active {
            // Blame the key the file actually sets: with `max_active: 50` alone the
            // culprit is max_active, not the default max_idle.
            let idle_key = format!("{k}.max_idle");
            let active_key = format!("{k}.max_active");
            let what = "max_idle is the total of idle upstream connections over all \
                        endpoints and workers";
            return Err(if self.present(&active_key) && !self.present(&idle_key) {
                self.err(
                    &active_key,
                    format!(
                        "must be at least {k}.max_idle ({}, the default), got {} ({what})",
                        p.max_idle, p.max_active
                    ),
                )
            } else {
                self.err(
                    &idle_key,
                    format!(
                        "must not exceed {k}.max_active ({}), got {} ({what})",
                        p.max_active, p.max_idle
                    ),
                )
            });
        }
        Ok(())
    }

    fn health_check(&self, h: &HealthCheckConfig) -> Result<(), ConfigError> {
        let k = "connection.health_check";
        let off = "to probe nothing, set `enabled: false`";
        self.nonzero(&format!("{k}.interval"), h.interval, off)?;
        self.nonzero(
            &format!("{k}.timeout"),
            h.timeout,
            "a probe needs time to connect",
        )?;
        if h.timeout >= h.interval {
            let timeout_key = format!("{k}.timeout");
            let interval_key = format!("{k}.interval");
            let (key, message) = if self.present(&interval_key) && !self.present(&timeout_key) {
                (
                    interval_key,
                    format!(
                        "must be longer than {k}.timeout ({}, the default), got {}",
                        go(h.timeout),
                        go(h.interval)
                    ),
                )
            } else {
                (
                    timeout_key,
                    format!(
                        "must be shorter than {k}.interval ({}), got {}",
                        go(h.interval),
                        go(h.timeout)
                    ),
                )
            };
            return Err(self.err(&key, message));
        }
        if h.rise == 0 {
            return Err(self.err(&format!("{k}.rise"), "at least 1 expected, got 0"));
        }
        if h.fall == 0 {
            return Err(self.err(&format!("{k}.fall"), "at least 1 expected, got 0"));
        }
        Ok(())
    }

    /// Sizes, and what each worker will map: `ceil(max_pool_size / workers)` slots of
    /// `size` bytes, at most `MAX_SLOTS` per worker, all of it within the machine's memory.
    fn buffer(&self, b: &BufferConfig, workers: Workers) -> Result<(), ConfigError> {
        let k = "connection.buffer";
        let pool_key = format!("{k}.max_pool_size");
        let size_key = format!("{k}.size");
        self.range(&size_key, b.size, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE)?;
        if b.max_pool_size == 0 {
            return Err(self.err(&pool_key, "at least 1 expected, got 0"));
        }
        let n = workers.resolve();
        let plural = if n == 1 { "worker" } else { "workers" };
        let how = match workers {
            Workers::Auto => format!("{n} {plural} (`workers: auto`, one per CPU here)"),
            Workers::Count(_) => format!("{n} {plural}"),
        };
        let per_worker = b.max_pool_size.div_ceil(n);
        if per_worker > MAX_SLOTS {
            let most = MAX_SLOTS.saturating_mul(n);
            return Err(self.err(
                &pool_key,
                format!(
                    "{} buffers over {how} is {per_worker} per worker, more than the \
                     {MAX_SLOTS} one worker can map: set max_pool_size to at most {most}, \
                     or raise `workers`",
                    b.max_pool_size
                ),
            ));
        }
        let total = (per_worker as u128) * (n as u128) * (b.size as u128);
        if let Some(mem) = crate::driver::sys::physical_memory() {
            if total > u128::from(mem) {
                let key = if self.present(&size_key) && !self.present(&pool_key) {
                    size_key
                } else {
                    pool_key
                };
                return Err(self.err(
                    &key,
                    format!(
                        "{} buffers of {} bytes over {how} need {}, more than this \
                         machine's memory ({}): lower max_pool_size or size",
                        b.max_pool_size,
                        b.size,
                        gib(total),
                        gib(u128::from(mem))
                    ),
                ));
            }
        }
        self.range(
            &format!("{k}.max_in_flight"),
            b.max_in_flight,
            1,
            MAX_IN_FLIGHT,
        )
    }

    fn monitoring(&self, m: &MonitoringConfig) -> Result<(), ConfigError> {
        self.nonzero(
            "connection.monitoring.metrics_interval",
            m.metrics_interval,
            "counters are published this often",
        )
    }

    fn listeners(&self, listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
        if listeners.is_empty() {
            return Err(self.err(
                "listeners",
                "at least one listener expected: add `listeners:` to the config file \
                 or pass --listen and --upstream",
            ));
        }
        let mut names = HashSet::new();
        for (i, l) in listeners.iter().enumerate() {
            let key = self.listener_key(i, "name");
            if l.name.is_empty() {
                return Err(self.err(&key, "a non-empty name expected, got \"\""));
            }
            if l.name.len() > MAX_NAME_LEN
                || !l
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(self.err(
                    &key,
                    format!(
                        "up to {MAX_NAME_LEN} of `A-Z a-z 0-9 _ . -` expected, got `{}`",
                        l.name
                    ),
                ));
            }
            if !names.insert(l.name.as_str()) {
                return Err(self.err(&key, format!("duplicate listener name `{}`", l.name)));
            }
            // Two sockets on one port collide when the addresses are equal or either is
            // a wildcard. Port 0 asks the kernel for a free port, so it never collides.
            if l.listen.port() != 0 {
                if let Some(j) = listeners[..i]
                    .iter()
                    .position(|o| overlaps(o.listen, l.listen))
                {
                    return Err(self.err(
                        &self.listener_key(i, "listen"),
                        format!(
                            "{} overlaps listener `{}` ({})",
                            l.listen, listeners[j].name, listeners[j].listen
                        ),
                    ));
                }
            }
            let ukey = self.listener_key(i, "upstreams");
            if l.upstreams.is_empty() {
                return Err(self.err(
                    &ukey,
                    "at least one upstream (`host:port`) expected, got an empty list",
                ));
            }
            let mut seen = HashSet::new();
            for (j, u) in l.upstreams.iter().enumerate() {
                let key = self.upstream_key(i, j);
                split_host_port(u).map_err(|m| self.err(&key, m))?;
                if !seen.insert(u.trim()) {
                    return Err(self.err(&key, format!("duplicate upstream `{u}`")));
                }
            }
        }
        Ok(())
    }

    fn upstream_key(&self, i: usize, j: usize) -> String {
        if self.cli_listener == Some(i) {
            "--upstream".to_string()
        } else {
            format!("listeners[{i}].upstreams[{j}]")
        }
    }

    /// The admin endpoint must not take a listener's port. When the file leaves
    /// `monitoring.listen` at its default, the listener is the key the user wrote: the
    /// error is put there and says how to move the admin address.
    fn admin_conflict(
        &self,
        m: &MonitoringConfig,
        listeners: &[ListenerConfig],
    ) -> Result<(), ConfigError> {
        // The admin server listens even with metrics off (health endpoints, status page).
        if m.listen.port() == 0 {
            return Ok(());
        }
        let Some((i, l)) = listeners
            .iter()
            .enumerate()
            .find(|(_, l)| overlaps(l.listen, m.listen))
        else {
            return Ok(());
        };
        let key = "connection.monitoring.listen";
        if self.admin_flag {
            return Err(invalid(
                "--admin-listen",
                None,
                format!(
                    "{} overlaps listener `{}` ({}): choose another admin address",
                    m.listen, l.name, l.listen
                ),
            ));
        }
        if self.present(key) || m.listen != DEFAULT_ADMIN_LISTEN {
            return Err(self.err(
                key,
                format!(
                    "{} overlaps listener `{}` ({}): choose another admin address",
                    m.listen, l.name, l.listen
                ),
            ));
        }
        Err(self.err(
            &self.listener_key(i, "listen"),
            format!(
                "{} overlaps the default admin address {DEFAULT_ADMIN_LISTEN} \
                 (`connection.monitoring.listen`, not set in this file): move it with \
                 `connection.monitoring.listen: 127.0.0.1:{}` (or `--admin-listen`), or \
                 listen on another port",
                l.listen,
                DEFAULT_ADMIN_LISTEN.port() + 1
            ),
        ))
    }

    /// Resolves every upstream of listener `i` to its first address.
    /// Resolves each upstream of listener `i`; two spellings of one address (say
    /// `localhost:9001` and `127.0.0.1:9001`) are a duplicate, like the same text twice.
    fn resolve(&self, i: usize, upstreams: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut resolved: Vec<SocketAddr> = Vec::with_capacity(upstreams.len());
        for (j, u) in upstreams.iter().enumerate() {
            let key = self.upstream_key(i, j);
            let u = u.trim();
            let mut addrs = u
                .to_socket_addrs()
                .map_err(|e| self.err(&key, format!("cannot resolve `{u}`: {e}")))?;
            let addr = addrs
                .next()
                .ok_or_else(|| self.err(&key, format!("`{u}` resolves to no address")))?;
            if let Some(k) = resolved.iter().position(|a| *a == addr) {
                let first = upstreams[k].trim();
                return Err(self.err(
                    &key,
                    format!(
                        "duplicate upstream: `{u}` and `{first}` (upstreams[{k}]) both resolve \
                         to {addr}; list each endpoint once"
                    ),
                ));
            }
            resolved.push(addr);
        }
        Ok(resolved)
    }
}

/// Whether two listen addresses would compete for one port.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks the `host:port` shape (DNS comes later): a host, and a port in 1..65535.
pub fn split_host_port(u: &str) -> Result<(&str, u16), String> {
    let u = u.trim();
    let Some((host, port)) = u.rsplit_once(':') else {
        return Err(format!("`host:port` expected, got `{u}` (no port)"));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("`host:port` expected, got `{u}` (no host)"));
    }
    if host.contains(':') && !u.starts_with('[') {
        return Err(format!(
            "`host:port` expected, got `{u}` (write IPv6 addresses as `[addr]:port`)"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!("port 1..65535 expected, got 0 in `{u}`")),
        Ok(p) => Ok((host, p)),
        Err(_) => Err(format!("port 1..65535 expected, got `{port}` in `{u}`")),
    }
}

/// Bytes as GiB with one decimal.
fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}
