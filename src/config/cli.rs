//! The config from a file plus the `--listen/--upstream/--workers/--admin-listen` flags,
//! and the effective configuration `sssonector check` prints.

use std::path::Path;

use super::{
    duration, invalid, parse, schema, values, Config, ConfigError, ListenerConfig, Source, Workers,
    CLI_LISTENER, MAX_IN_FLIGHT,
};

impl Config {
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
        Config::from_cli_with_admin(path, listen, upstreams, workers, None)
    }

    /// [`from_cli`](Self::from_cli) plus `--admin-listen`, which overrides
    /// `connection.monitoring.listen` before validation (so that it, not the file's
    /// address, is checked against the listeners).
    pub fn from_cli_with_admin(
        path: Option<&Path>,
        listen: Option<&str>,
        upstreams: &[String],
        workers: Option<&str>,
        admin_listen: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let (mut config, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let config = parse::parse_unvalidated(&text).map_err(|e| e.in_file(p))?;
                (config, Some(text))
            }
            None => (Config::default(), None),
        };

        let mut cli_listener = None;
        match listen {
            Some(addr) => {
                let listen =
                    values::parse_listen(addr).map_err(|m| invalid("--listen", None, m))?;
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
        if let Some(a) = admin_listen {
            config.connection.monitoring.listen =
                values::parse_listen(a).map_err(|m| invalid("--admin-listen", None, m))?;
        }

        config.source = Source {
            path: path.map(|p| p.display().to_string()),
            text: text.map(Into::into),
            cli_listener,
            admin_flag: admin_listen.is_some(),
        };
        match (config.validate_in(), path) {
            (Ok(()), _) => Ok(config),
            (Err(e), Some(p)) => Err(e.in_file(p)),
            (Err(e), None) => Err(e),
        }
    }

    /// The effective config (defaults filled in) as YAML, for `sssonector check`: each
    /// key with a comment saying what it does, and a header with what the values come
    /// to on this machine. The output loads again as a config file.
    pub fn to_effective_yaml(&self) -> String {
        let mut out = String::from("# sssonector effective configuration (defaults filled in)\n");
        // The resolved addresses are what the proxy binds and dials; show them so `check`
        // answers "where will this go" without being part of the re-loadable YAML.
        for l in &self.listeners {
            for (u, a) in l.upstreams.iter().zip(&l.resolved) {
                out.push_str(&format!("# listener `{}`: upstream {u} -> {a}\n", l.name));
            }
        }
        let workers = self.workers.resolve();
        if self.workers == Workers::Auto {
            out.push_str(&format!("# workers: auto is {workers} on this machine\n"));
        }
        let c = &self.connection;
        let per_worker = c.buffer.max_pool_size.div_ceil(workers).max(1);
        out.push_str(&format!(
            "# buffers: ceil({} / {workers} workers) = {per_worker} per worker of {} bytes, \
             {:.1} MiB in all\n",
            c.buffer.max_pool_size,
            c.buffer.size,
            (per_worker * workers) as f64 * c.buffer.size as f64 / f64::from(1u32 << 20)
        ));
        let hold = crate::buffer::directions_to_exhaust(
            per_worker,
            c.buffer.max_in_flight.clamp(1, MAX_IN_FLIGHT),
        )
        .div_ceil(2);
        out.push_str(&format!(
            "# buffers: {hold} sessions whose peers stop reading can hold one worker's buffers \
             (max_active {}); {}\n",
            c.pool.max_active,
            match c.session.send_limit() {
                Some(t) => format!(
                    "session.send_timeout closes them after {}",
                    duration::format(t)
                ),
                None => "session.send_timeout 0: they keep them".into(),
            }
        ));
        let endpoints: usize = self.listeners.iter().map(|l| l.upstreams.len()).sum();
        out.push_str(&format!(
            "# pool: max_idle {} is the total of idle upstream connections over all {} \
             endpoints and {workers} workers\n",
            c.pool.max_idle, endpoints
        ));
        match c.session.idle_limit() {
            Some(d) => out.push_str(&format!(
                "# sessions: closed after {} without traffic in either direction\n",
                duration::format(d)
            )),
            None => out.push_str("# sessions: never closed for inactivity (idle_timeout 0)\n"),
        }
        let m = &c.monitoring;
        out.push_str(&format!(
            "# admin: http://{}/ (status page), /healthz, /readyz{}\n",
            m.listen,
            if m.enabled {
                ", /metrics"
            } else {
                "; metrics off (/metrics answers 404)"
            }
        ));
        out.push_str(&format!(
            "# shutdown: on SIGTERM/SIGINT /readyz fails, listeners close after {}, sessions \
             in flight get {} more\n",
            duration::format(self.shutdown.drain_delay),
            duration::format(self.shutdown.grace_period)
        ));
        match serde_yaml::to_string(self) {
            Ok(yaml) => out.push_str(&schema::annotate(&yaml)),
            Err(e) => out.push_str(&format!("# cannot render the configuration: {e}\n")),
        }
        out
    }
}

impl ConfigError {
    /// Prefixes the file name, except for errors about flags (they are not in the file)
    /// and read errors (they name it already).
    pub(crate) fn in_file(self, path: &Path) -> ConfigError {
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
