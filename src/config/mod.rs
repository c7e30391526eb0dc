//! Configuration: the spec's `connection:` section plus listeners and workers, parsed from YAML.
//!
//! Every key has a default (see `docs/configuration.md`); only a listener is required, in
//! the file or from `--listen/--upstream`. Parsing is strict (unknown keys are errors) and
//! every error names the key path and, when it comes from a file, the line.
//!
//! - [`duration`]: Go durations (`300ms`, `1.5h`, `2h45m`), parsed and printed.
//! - `values`: the scalar deserializers and their messages (numbers, booleans, words,
//!   listen addresses).
//! - `parse`: YAML to [`Config`], with serde's messages turned into the user's terms.
//! - `schema`: the key paths the structs accept, for suggestions and `check`'s comments.
//! - `validate`: ranges, cross-key rules, what the workers can map, DNS.
//! - `cli`: the config from a file plus flags, and `check`'s effective configuration.
//! - `bind`: the listen addresses tried before a start, and what holds a busy port.
//! - `locate`: the line of a key path in the YAML text.

mod bind;
mod cli;
pub mod duration;
mod locate;
mod parse;
pub mod schema;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;
pub use bind::is_config_error as is_bind_config_error;
pub use values::parse_listen;

/// The embedded config of `sssonector demo`; its upstream `127.0.0.1:9` is a placeholder
/// the demo replaces with the address of its built-in echo server.
pub const DEMO_CONFIG: &str = include_str!("../../configs/demo.yaml");

/// Name of the listener built from `--listen/--upstream`.
pub const CLI_LISTENER: &str = "cli";
/// Upper bound of `workers`.
pub const MAX_WORKERS: usize = 1024;
/// Range of `connection.buffer.size` (the spec's "4KB to 1MB").
pub const MIN_BUFFER_SIZE: usize = 4096;
pub const MAX_BUFFER_SIZE: usize = 1 << 20;
/// Upper bound of `connection.buffer.max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 16;
/// Longest listener name; names end up in metric labels and log lines.
pub const MAX_NAME_LEN: usize = 64;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub workers: Workers,
    /// Which data plane runs the workers: `auto` (io_uring, else epoll), `io_uring`, `epoll`.
    #[serde(default)]
    pub data_plane: DataPlaneSetting,
    #[serde(default)]
    pub connection: ConnectionConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Where the config came from, for errors found after loading (a busy port).
    #[serde(skip)]
    pub(crate) source: Source,
}

/// The file (and its text) a config was read from, and which listener the flags made.
#[derive(Debug, Clone, Default)]
pub(crate) struct Source {
    pub path: Option<String>,
    pub text: Option<Arc<str>>,
    pub cli_listener: Option<usize>,
    /// `connection.monitoring.listen` comes from `--admin-listen`.
    pub admin_flag: bool,
}

/// Where a config came from does not make two configs different.
impl PartialEq for Source {
    fn eq(&self, _: &Source) -> bool {
        true
    }
}

/// `workers: auto` or a positive number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
}

impl Workers {
    /// The number of worker threads this resolves to on this machine.
    pub fn resolve(self) -> usize {
        match self {
            Workers::Count(n) => n.max(1),
            Workers::Auto => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }

    /// A count in `1..=MAX_WORKERS`, else the message to report.
    fn count(n: u64) -> Result<Workers, String> {
        match usize::try_from(n) {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Workers::Count(n)),
            _ => Err(format!("`auto` or 1..{MAX_WORKERS} expected, got {n}")),
        }
    }
}

impl FromStr for Workers {
    type Err = String;

    /// `auto` or a number, as written in YAML or after `--workers`.
    fn from_str(s: &str) -> Result<Workers, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(Workers::Auto);
        }
        match s.parse::<u64>() {
            Ok(n) => Workers::count(n),
            Err(_) => Err(format!("`auto` or 1..{MAX_WORKERS} expected, got `{s}`")),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => s.serialize_str("auto"),
            Workers::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: untagged errors say only "did not match
        // any variant", which names neither the accepted values nor what was written.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "`auto` or a number of threads (1..{MAX_WORKERS})")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Workers, E> {
                Workers::count(n).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Workers, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "`auto` or 1..{MAX_WORKERS} expected, got {n}"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Workers, E> {
                Err(E::custom(format!(
                    "`auto` or 1..{MAX_WORKERS} expected, got {n}"
                )))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Workers, E> {
                Err(E::custom(format!(
                    "`auto` or 1..{MAX_WORKERS} expected, got `{b}`"
                )))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Workers, E> {
                Err(E::custom(format!(
                    "`auto` or 1..{MAX_WORKERS} expected, got nothing (the key has no value)"
                )))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Workers, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Workers, A::Error> {
                Err(serde::de::Error::custom(format!(
                    "`auto` or 1..{MAX_WORKERS} expected, got a list"
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Workers, A::Error> {
                Err(serde::de::Error::custom(format!(
                    "`auto` or 1..{MAX_WORKERS} expected, got a mapping"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One listening address and the upstream endpoints its sessions go to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port`, `[ipv6]:port`, `:port` (every IPv4 address) or `host:port` (resolved
    /// when the config is loaded); see [`parse_listen`].
    #[serde(deserialize_with = "values::listen")]
    pub listen: SocketAddr,
    /// `host:port` endpoints; a single string is accepted for a single endpoint.
    #[serde(deserialize_with = "values::upstreams")]
    pub upstreams: Vec<String>,
    /// Resolved addresses of `upstreams`, filled in by validation, one entry per upstream.
    #[serde(skip)]
    pub resolved: Vec<SocketAddr>,
}

/// The spec's `connection:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    pub pool: PoolConfig,
    pub session: SessionConfig,
    pub health_check: HealthCheckConfig,
    pub buffer: BufferConfig,
    pub monitoring: MonitoringConfig,
}

/// How sessions are spread over a listener's healthy upstreams.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastActive,
}

impl<'de> Deserialize<'de> for Balance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::one_of(
            d,
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_active", Balance::LeastActive),
            ],
        )
    }
}

/// `connection.pool`: warm upstream connections, admission limit, dialing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    #[serde(deserialize_with = "values::boolean")]
    pub enabled: bool,
    /// An idle pooled connection older than this is closed (sessions: see
    /// [`SessionConfig::idle_timeout`]).
    #[serde(with = "duration::serde")]
    pub idle_timeout: Duration,
    /// Idle pooled upstream connections the proxy keeps in all: over every listener,
    /// endpoint and worker.
    #[serde(deserialize_with = "values::limit")]
    pub max_idle: usize,
    #[serde(deserialize_with = "values::limit")]
    pub max_active: usize,
    #[serde(with = "duration::serde")]
    pub retry_interval: Duration,
    #[serde(deserialize_with = "values::limit32")]
    pub max_retries: u32,
    /// Connect timeout for one upstream dial attempt.
    #[serde(with = "duration::serde")]
    pub connect_timeout: Duration,
    /// How long a client may wait for a free slot under `max_active` before it is closed.
    #[serde(with = "duration::serde")]
    pub queue_timeout: Duration,
    /// Clients that may wait for admission at once; past it a new client is closed.
    #[serde(deserialize_with = "values::limit")]
    pub max_queued: usize,
    pub balance: Balance,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            idle_timeout: Duration::from_secs(300),
            max_idle: 100,
            max_active: 1000,
            retry_interval: Duration::from_secs(5),
            max_retries: 3,
            connect_timeout: Duration::from_secs(5),
            queue_timeout: Duration::from_secs(10),
            max_queued: 1000,
            balance: Balance::RoundRobin,
        }
    }
}

/// `connection.session`: client sessions (a client and its upstream connection).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session with no traffic in either direction for this long is closed; zero
    /// means never. Default 1 h, as Envoy's `tcp_proxy`.
    #[serde(with = "duration::serde")]
    pub idle_timeout: Duration,
    /// A session whose peer has taken no byte for this long while data waits for it is
    /// closed, so the buffers it holds come back; zero means never. Default 60 s.
    #[serde(with = "duration::serde")]
    pub send_timeout: Duration,
}

impl SessionConfig {
    /// The inactivity limit, `None` when it is off (`idle_timeout: 0`).
    pub fn idle_limit(&self) -> Option<Duration> {
        (!self.idle_timeout.is_zero()).then_some(self.idle_timeout)
    }

    /// The send-progress limit, `None` when it is off (`send_timeout: 0`).
    pub fn send_limit(&self) -> Option<Duration> {
        (!self.send_timeout.is_zero()).then_some(self.send_timeout)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(3600),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// `connection.health_check`: the endpoint prober.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    #[serde(deserialize_with = "values::boolean")]
    pub enabled: bool,
    #[serde(with = "duration::serde")]
    pub interval: Duration,
    #[serde(with = "duration::serde")]
    pub timeout: Duration,
    /// Consecutive successful probes that mark a down endpoint up.
    #[serde(deserialize_with = "values::count32")]
    pub rise: u32,
    /// Consecutive failed probes that mark an up endpoint down.
    #[serde(deserialize_with = "values::count32")]
    pub fall: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

pub use crate::driver::DataPlaneSetting;

impl<'de> Deserialize<'de> for DataPlaneSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::one_of(d, &DataPlaneSetting::CHOICES)
    }
}

/// How a received slot is sent on.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    #[default]
    Auto,
    Send,
    Fixed,
    Zerocopy,
}

impl<'de> Deserialize<'de> for SendMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::one_of(
            d,
            &[
                ("auto", SendMode::Auto),
                ("send", SendMode::Send),
                ("fixed", SendMode::Fixed),
                ("zerocopy", SendMode::Zerocopy),
            ],
        )
    }
}

/// `connection.buffer`: the per-worker buffer registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    #[serde(deserialize_with = "values::bytes")]
    pub size: usize,
    /// Buffers in all; each worker maps `ceil(max_pool_size / workers)`.
    #[serde(deserialize_with = "values::limit")]
    pub max_pool_size: usize,
    /// Slots one direction of a session may hold (received, not yet fully sent).
    #[serde(deserialize_with = "values::count")]
    pub max_in_flight: usize,
    pub send_mode: SendMode,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            size: 65536,
            max_pool_size: 1000,
            max_in_flight: 4,
            send_mode: SendMode::Auto,
        }
    }
}

/// `connection.monitoring`: the metrics and the admin HTTP server (`/metrics`, `/healthz`,
/// `/readyz`, a status page at `/`). `enabled: false` turns only the metrics off; the
/// server itself stays on for the health endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    #[serde(deserialize_with = "values::boolean")]
    pub enabled: bool,
    #[serde(with = "duration::serde")]
    pub metrics_interval: Duration,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[serde(deserialize_with = "values::listen")]
    pub listen: SocketAddr,
}

/// The admin address when `connection.monitoring.listen` is not set.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            metrics_interval: Duration::from_secs(60),
            listen: DEFAULT_ADMIN_LISTEN,
        }
    }
}

/// `shutdown`: the drain that SIGTERM and SIGINT start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long listeners keep accepting after the signal while `/readyz` fails, so that
    /// load balancers stop routing here first.
    #[serde(with = "duration::serde")]
    pub drain_delay: Duration,
    /// How long sessions in flight may take to finish once the listeners closed; what is
    /// left then is closed.
    #[serde(with = "duration::serde")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::from_cli(Some(path), None, &[], None)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = parse::parse_unvalidated(text)?;
        config.source = Source {
            path: None,
            text: Some(text.into()),
            cli_listener: None,
            admin_flag: false,
        };
        config.validate_in()?;
        Ok(config)
    }

    /// Checks ranges and cross-field rules and resolves upstream addresses (with the
    /// lines of the text the config was parsed from, if any).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_in()
    }

    /// Validation proper; errors carry the lines of `self.source`.
    fn validate_in(&mut self) -> Result<(), ConfigError> {
        if let Ok(v) = std::env::var(DataPlaneSetting::ENV) {
            self.data_plane = v
                .trim()
                .parse()
                .map_err(|m| invalid(DataPlaneSetting::ENV, None, m))?;
        }
        let source = self.source.clone();
        let v = validate::Validator::new(&source);
        v.config(self)
    }
}

/// A key's error: key path, line (if known), message.
fn invalid(key: &str, line: Option<usize>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        line,
        message: message.into(),
    }
}
