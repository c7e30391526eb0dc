//! Configuration: the spec's `connection:` section plus listeners and workers, parsed from YAML.
//!
//! Every key has a default (see `docs/configuration.md`); only a listener is required, in
//! the file or from `--listen/--upstream`. Parsing is strict (unknown keys are errors) and
//! every error names the key path and, when it comes from a file, the line.

mod locate;

use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::ConfigError;

/// The embedded config of `sssonector demo`; its upstream `127.0.0.1:9` is a placeholder
/// the demo replaces with the address of its built-in echo server.
pub const DEMO_CONFIG: &str = include_str!("../configs/demo.yaml");

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
    #[serde(default)]
    pub connection: ConnectionConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
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
        impl serde::de::Visitor<'_> for Visitor {
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
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Workers, E> {
                s.parse().map_err(E::custom)
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
    pub listen: SocketAddr,
    /// `host:port` endpoints; a single string is accepted for a single endpoint.
    #[serde(deserialize_with = "one_or_many")]
    pub upstreams: Vec<String>,
    /// Resolved addresses of `upstreams`, filled in by validation, one entry per upstream.
    #[serde(skip)]
    pub resolved: Vec<SocketAddr>,
}

/// `upstreams: a:1` as well as `upstreams: [a:1, b:2]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a `host:port` string or a list of them expected"
    )]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The spec's `connection:` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    pub pool: PoolConfig,
    pub health_check: HealthCheckConfig,
    pub buffer: BufferConfig,
    pub monitoring: MonitoringConfig,
}

/// How sessions are spread over a listener's healthy upstreams.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastActive,
}

/// `connection.pool`: warm upstream connections, admission limit, dialing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    pub max_idle: usize,
    pub max_active: usize,
    #[serde(with = "duration")]
    pub retry_interval: Duration,
    pub max_retries: u32,
    /// Connect timeout for one upstream dial attempt.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a client may wait for a free slot under `max_active` before it is closed.
    #[serde(with = "duration")]
    pub queue_timeout: Duration,
    /// Clients that may wait for admission at once; past it a new client is closed.
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

/// `connection.health_check`: the endpoint prober.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive successful probes that mark a down endpoint up.
    pub rise: u32,
    /// Consecutive failed probes that mark an up endpoint down.
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

/// `connection.buffer`: the per-worker buffer registry.
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
            max_in_flight: 4,
            send_mode: SendMode::Auto,
        }
    }
}

/// `connection.monitoring`: metrics publishing and the admin HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub metrics_interval: Duration,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
}

/// `shutdown`: the drain that SIGTERM and SIGINT start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long listeners keep accepting after the signal while `/readyz` fails, so that
    /// load balancers stop routing here first.
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    /// How long sessions in flight may take to finish once the listeners closed; what is
    /// left then is closed.
    #[serde(with = "duration")]
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

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            metrics_interval: Duration::from_secs(60),
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Go-style durations (`500ms`, `5s`, `5m`, `1h`, `1h30m`) in and humantime form out.
mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(d, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Our own visitor rather than humantime_serde's: its error ("expected a
        // duration") drops humantime's reason, such as "time unit needed".
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as `500ms`, `5s`, `5m` or `1h`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
                humantime::parse_duration(s.trim()).map_err(|e| {
                    E::custom(format!(
                        "a duration such as `500ms`, `5s`, `5m` or `1h` expected, got `{s}` ({e})"
                    ))
                })
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a duration with a unit expected (e.g. `{n}s` or `{n}ms`), got `{n}`"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "a non-negative duration with a unit expected (e.g. `5s`), got `{n}`"
                )))
            }
        }
        // A string in YAML; deserialize_any so bare numbers reach the visitor and get
        // the "unit needed" message instead of a type error.
        d.deserialize_any(Visitor)
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_cli(Some(path), None, &[], None)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = parse_unvalidated(text)?;
        config.validate_in(Some(text), None)?;
        Ok(config)
    }

    /// Checks ranges and cross-field rules and resolves upstream addresses (no lines in
    /// the errors: there is no text to point into).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_in(None, None)
    }

    /// Builds a config from an optional file plus the `--listen/--upstream/--workers` flags.
    ///
    /// `--listen A --upstream B...` adds a listener named `cli` to the file's listeners,
    /// replacing one the file already names `cli`. `--workers` overrides `workers:`.
    pub fn from_cli(
        path: Option<&Path>,
        listen: Option<&str>,
        upstreams: &[String],
        workers: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let (mut config, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let config = parse_unvalidated(&text).map_err(|e| e.in_file(p))?;
                (config, Some(text))
            }
            None => (Config::default(), None),
        };

        let mut cli_listener = None;
        match listen {
            Some(addr) => {
                let listen = addr.trim().parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "--listen",
                        None,
                        format!("`ip:port` expected, got `{addr}`"),
                    )
                })?;
                if upstreams.is_empty() {
                    return Err(invalid(
                        "--upstream",
                        None,
                        "--listen needs at least one --upstream",
                    ));
                }
                let listener = ListenerConfig {
                    name: CLI_LISTENER.to_string(),
                    listen,
                    upstreams: upstreams.to_vec(),
                    resolved: Vec::new(),
                };
                let index = match config.listeners.iter().position(|l| l.name == CLI_LISTENER) {
                    Some(i) => {
                        config.listeners[i] = listener;
                        i
                    }
                    None => {
                        config.listeners.push(listener);
                        config.listeners.len() - 1
                    }
                };
                cli_listener = Some(index);
            }
            None if !upstreams.is_empty() => {
                return Err(invalid(
                    "--upstream",
                    None,
                    "--upstream needs --listen (upstreams of file listeners go in the file)",
                ));
            }
            None => {}
        }
        if let Some(w) = workers {
            config.workers = w.parse().map_err(|m| invalid("--workers", None, m))?;
        }

        let result = config.validate_in(text.as_deref(), cli_listener);
        match (result, path) {
            (Ok(()), _) => Ok(config),
            (Err(e), Some(p)) => Err(e.in_file(p)),
            (Err(e), None) => Err(e),
        }
    }

    /// The effective config (defaults filled in) as YAML, for `sssonector check`.
    pub fn to_effective_yaml(&self) -> String {
        let mut out = String::from("# sssonector effective configuration (defaults filled in)\n");
        // The resolved addresses are what the proxy dials; show them so `check` answers
        // "where will this go" without being part of the re-loadable YAML.
        for l in &self.listeners {
            for (u, a) in l.upstreams.iter().zip(&l.resolved) {
                out.push_str(&format!("# listener `{}`: upstream {u} -> {a}\n", l.name));
            }
        }
        match serde_yaml::to_string(self) {
            Ok(yaml) => out.push_str(&yaml),
            Err(e) => out.push_str(&format!("# cannot render the configuration: {e}\n")),
        }
        out
    }

    /// Validation proper. `text` is the file the config came from (for line numbers);
    /// `cli_listener` is the index of the listener built from flags, whose errors name
    /// `--listen` / `--upstream` instead of a key path.
    fn validate_in(
        &mut self,
        text: Option<&str>,
        cli_listener: Option<usize>,
    ) -> Result<(), ConfigError> {
        let v = Validator { text, cli_listener };
        // Cheap, local checks first; DNS last, so a typo is reported without a lookup.
        v.workers(self.workers)?;
        v.pool(&self.connection.pool)?;
        v.health_check(&self.connection.health_check)?;
        v.buffer(&self.connection.buffer)?;
        v.monitoring(&self.connection.monitoring)?;
        v.listeners(&self.listeners)?;
        v.admin_conflict(&self.connection.monitoring, &self.listeners)?;
        for (i, l) in self.listeners.iter_mut().enumerate() {
            l.resolved = v.resolve(i, &l.upstreams)?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Prefixes the file name, except for errors about flags (they are not in the file)
    /// and read errors (they name it already).
    fn in_file(self, path: &Path) -> ConfigError {
        match &self {
            ConfigError::Read { .. } | ConfigError::File { .. } => self,
            ConfigError::Invalid { key, .. } if key.starts_with("--") => self,
            _ => ConfigError::File {
                path: path.display().to_string(),
                error: Box::new(self),
            },
        }
    }
}

fn invalid(key: &str, line: Option<usize>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        line,
        message: message.into(),
    }
}

/// YAML to `Config` without the semantic checks.
fn parse_unvalidated(text: &str) -> Result<Config, ConfigError> {
    // Look at the shape first: for an empty document or a scalar/sequence at the top
    // level serde's messages ("invalid type: unit value") do not say what is wrong.
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        ConfigError::Syntax {
            line,
            message: strip_location(&e.to_string()),
        }
    })?;
    let top = "(top level)";
    let got = match value {
        serde_yaml::Value::Mapping(_) => None,
        serde_yaml::Value::Null => {
            return Err(invalid(
                top,
                None,
                "the configuration is empty: a mapping with `listeners:` (and optionally \
                 `workers:`, `connection:`) expected",
            ))
        }
        serde_yaml::Value::Sequence(_) => Some("a sequence"),
        serde_yaml::Value::Tagged(_) => Some("a tagged value"),
        _ => Some("a scalar"),
    };
    if let Some(got) = got {
        return Err(invalid(
            top,
            locate::first_content_line(text),
            format!("a mapping with `listeners:`, `workers:`, `connection:` expected, got {got}"),
        ));
    }

    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_location(&inner.to_string());
        // Depending on where serde stops, an unknown field is reported at its parent;
        // name the field itself either way.
        if let Some(field) = unknown_field(&message).filter(|f| !ends_with_segment(&key, f)) {
            key = if key == "." {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
        if key == "." {
            key = top.to_string();
        }
        // The key's own line when it is written out: serde's location is where the
        // deserializer stopped, which for buffered (untagged) values is the parent.
        let line = locate::locate(text, &key)
            .filter(|l| l.exact)
            .map(|l| l.line)
            .or_else(|| inner.location().map(|l| l.line()))
            .or_else(|| locate::line_of(text, &key));
        invalid(&key, line, message)
    })
}

/// Whether the dotted `path` ends with the key `field`.
fn ends_with_segment(path: &str, field: &str) -> bool {
    path == field || path.ends_with(&format!(".{field}"))
}

/// serde_yaml's message without its own `path: ` prefix and `at line L column C` part:
/// both are reported in our own format.
fn strip_location(message: &str) -> String {
    let mut owned = message.to_string();
    // " at line 2 column 1" may end the message or sit before ", while parsing ...".
    if let Some(i) = owned.find(" at line ") {
        let tail = &owned[i + " at line ".len()..];
        let mut words = tail.splitn(4, ' ');
        let line_no = words.next().unwrap_or("");
        let column = words.next().unwrap_or("");
        let col_no = words.next().unwrap_or("").trim_end_matches(',');
        if line_no.parse::<usize>().is_ok() && column == "column" && col_no.parse::<usize>().is_ok()
        {
            let consumed = " at line ".len() + line_no.len() + 1 + column.len() + 1 + col_no.len();
            owned.replace_range(i..i + consumed, "");
        }
    }
    // serde names our Rust types ("expected struct PoolConfig"); YAML users see mappings.
    if let Some(i) = owned.find("expected struct ") {
        owned.replace_range(i.., "expected a mapping");
    }
    let mut m = owned.as_str();
    // serde_yaml prefixes nested errors with its own path (`connection.pool: ...`).
    if let Some((prefix, rest)) = m.split_once(": ") {
        let path_like = !prefix.is_empty()
            && !prefix.contains(' ')
            && prefix
                .chars()
                .all(|c| c.is_alphanumeric() || "_.[]-".contains(c));
        if path_like {
            m = rest;
        }
    }
    m.to_string()
}

/// The field of an "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Semantic checks, each naming its key and (with `text`) its line.
struct Validator<'a> {
    text: Option<&'a str>,
    cli_listener: Option<usize>,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.text.and_then(|t| locate::line_of(t, key));
        invalid(key, line, message)
    }

    /// Whether the file spells `key` out (as opposed to taking its default).
    fn present(&self, key: &str) -> bool {
        self.text.is_some_and(|t| locate::is_present(t, key))
    }

    /// Key of a listener field; the flag for the listener built from flags.
    fn listener_key(&self, i: usize, field: &str) -> String {
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

    fn nonzero(&self, key: &str, d: Duration) -> Result<(), ConfigError> {
        if d.is_zero() {
            return Err(self.err(
                key,
                "a non-zero duration expected (e.g. `500ms`, `5s`, `5m`)",
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
        self.nonzero(&format!("{k}.idle_timeout"), p.idle_timeout)?;
        self.nonzero(&format!("{k}.retry_interval"), p.retry_interval)?;
        self.nonzero(&format!("{k}.connect_timeout"), p.connect_timeout)?;
        self.nonzero(&format!("{k}.queue_timeout"), p.queue_timeout)?;
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
            return Err(if self.present(&active_key) && !self.present(&idle_key) {
                self.err(
                    &active_key,
                    format!(
                        "must be at least {k}.max_idle ({}, the default), got {}",
                        p.max_idle, p.max_active
                    ),
                )
            } else {
                self.err(
                    &idle_key,
                    format!(
                        "must not exceed {k}.max_active ({}), got {}",
                        p.max_active, p.max_idle
                    ),
                )
            });
        }
        Ok(())
    }

    fn health_check(&self, h: &HealthCheckConfig) -> Result<(), ConfigError> {
        let k = "connection.health_check";
        self.nonzero(&format!("{k}.interval"), h.interval)?;
        self.nonzero(&format!("{k}.timeout"), h.timeout)?;
        if h.timeout >= h.interval {
            let timeout_key = format!("{k}.timeout");
            let interval_key = format!("{k}.interval");
            let (key, message) = if self.present(&interval_key) && !self.present(&timeout_key) {
                (
                    interval_key,
                    format!(
                        "must be longer than {k}.timeout ({}), got {}",
                        humantime::format_duration(h.timeout),
                        humantime::format_duration(h.interval)
                    ),
                )
            } else {
                (
                    timeout_key,
                    format!(
                        "must be shorter than {k}.interval ({}), got {}",
                        humantime::format_duration(h.interval),
                        humantime::format_duration(h.timeout)
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

    fn buffer(&self, b: &BufferConfig) -> Result<(), ConfigError> {
        let k = "connection.buffer";
        self.range(
            &format!("{k}.size"),
            b.size,
            MIN_BUFFER_SIZE,
            MAX_BUFFER_SIZE,
        )?;
        if b.max_pool_size == 0 {
            return Err(self.err(&format!("{k}.max_pool_size"), "at least 1 expected, got 0"));
        }
        if b.size.checked_mul(b.max_pool_size).is_none() {
            return Err(self.err(
                &format!("{k}.max_pool_size"),
                format!(
                    "size x max_pool_size overflows ({} x {})",
                    b.size, b.max_pool_size
                ),
            ));
        }
        self.range(
            &format!("{k}.max_in_flight"),
            b.max_in_flight,
            1,
            MAX_IN_FLIGHT,
        )
    }

    fn monitoring(&self, m: &MonitoringConfig) -> Result<(), ConfigError> {
        self.nonzero("connection.monitoring.metrics_interval", m.metrics_interval)
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
                return Err(self.err(&key, "a non-empty name expected"));
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
                return Err(self.err(&ukey, "at least one upstream (`host:port`) expected"));
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

    /// The admin endpoint must not take a listener's port.
    fn admin_conflict(
        &self,
        m: &MonitoringConfig,
        listeners: &[ListenerConfig],
    ) -> Result<(), ConfigError> {
        // The admin server listens even with metrics off (health endpoints, status page).
        if m.listen.port() == 0 {
            return Ok(());
        }
        if let Some(l) = listeners.iter().find(|l| overlaps(l.listen, m.listen)) {
            return Err(self.err(
                "connection.monitoring.listen",
                format!("{} overlaps listener `{}` ({})", m.listen, l.name, l.listen),
            ));
        }
        Ok(())
    }

    /// Resolves every upstream of listener `i` to its first address.
    fn resolve(&self, i: usize, upstreams: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
        upstreams
            .iter()
            .enumerate()
            .map(|(j, u)| {
                let key = self.upstream_key(i, j);
                let u = u.trim();
                let mut addrs = u
                    .to_socket_addrs()
                    .map_err(|e| self.err(&key, format!("cannot resolve `{u}`: {e}")))?;
                addrs
                    .next()
                    .ok_or_else(|| self.err(&key, format!("`{u}` resolves to no address")))
            })
            .collect()
    }
}

/// Whether two listen addresses would compete for one port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks the `host:port` shape (DNS comes later): a host, and a port in 1..65535.
fn split_host_port(u: &str) -> Result<(&str, u16), String> {
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
