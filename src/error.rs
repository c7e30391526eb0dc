//! Error types, each naming the side (client, upstream, internal) and the peer where there is one.

use std::io;
use std::net::SocketAddr;

/// A configuration that cannot be used; each variant names the key path and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("YAML syntax error{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    #[error("{key}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        key: String,
        line: Option<usize>,
        message: String,
    },
    /// Any of the above, from the named file. Not a `source`: the Display shows it
    /// already, and a chain printer would repeat it.
    #[error("{path}: {error}")]
    File {
        path: String,
        error: Box<ConfigError>,
    },
}

/// Failures of the proxy at start or at run time.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("io_uring is unavailable: {0}")]
    UringUnavailable(String),
    /// A listener's address cannot be bound: the user's configuration when
    /// [`crate::config::is_bind_config_error`] says so (the binary then reports it as
    /// `Config::bind_error`, with the key and line), else the machine's.
    #[error("listener `{name}` cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("internal: {what}: {source}")]
    Internal { what: String, source: io::Error },
}
