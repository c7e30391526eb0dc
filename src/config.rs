//! Configuration: the spec's `connection:` section plus listeners and workers, parsed from YAML.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub connection: ConnectionConfig,
}

/// `workers: auto` or a positive number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
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
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(usize),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Workers::Count(n)),
            Raw::S(s) if s == "auto" => Ok(Workers::Auto),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "`auto` or a positive number expected, got `{s}`"
            ))),
        }
    }
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
}

/// One listening address and the upstream endpoints its sessions go to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub upstreams: Vec<String>,
    /// Resolved addresses of `upstreams`, filled in by validation, one entry per upstream.
    #[serde(skip)]
    pub resolved: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    pub pool: PoolConfig,
    pub health_check: HealthCheckConfig,
    pub buffer: BufferConfig,
    pub monitoring: MonitoringConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub max_active: usize,
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    pub max_retries: u32,
    /// Connect timeout for one upstream dial attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
        }
    }
}

/// How a received slot is sent on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    #[default]
    Auto,
    Send,
    Fixed,
    Zerocopy,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub size: usize,
    pub max_pool_size: usize,
    /// Slots one direction of a session may hold (received, not yet fully sent).
    pub max_in_flight: usize,
    pub send_mode: SendMode,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            size: 65536,
            max_pool_size: 1000,
            max_in_flight: 2,
            send_mode: SendMode::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            metrics_interval: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and resolves upstream addresses.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listeners".into(),
                line: None,
                message: "at least one listener expected".into(),
            });
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            l.resolved.clear();
            for u in &l.upstreams {
                use std::net::ToSocketAddrs;
                let addr = u
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ConfigError::Invalid {
                        key: format!("listeners[{i}].upstreams"),
                        line: None,
                        message: format!("cannot resolve `{u}`"),
                    })?;
                l.resolved.push(addr);
            }
        }
        Ok(())
    }
}

impl Config {
    /// Builds a config from an optional file plus the `--listen/--upstream/--workers` flags.
    pub fn from_cli(
        _path: Option<&Path>,
        _listen: Option<&str>,
        _upstreams: &[String],
        _workers: Option<&str>,
    ) -> Result<Config, ConfigError> {
        todo!("config helper")
    }

    /// The effective config (defaults filled in) as YAML, for `sssonector check`.
    pub fn to_effective_yaml(&self) -> String {
        todo!("config helper")
    }
}
