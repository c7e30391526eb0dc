//! The `sssonector` command line: arguments, logging, config loading and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sssonector::{Config, ProxyError};

/// A Linux TCP proxy on io_uring with warm upstream pools, admission control and health checks.
#[derive(Parser, Debug)]
#[command(name = "sssonector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (YAML).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Listen address for a listener named `cli`, instead of (or on top of) a config file.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Upstream address for the `--listen` listener; repeat for several endpoints.
    #[arg(long, global = true)]
    upstream: Vec<String>,
    /// Worker threads (`auto` or a number); overrides the config file.
    #[arg(long, global = true)]
    workers: Option<String>,
    /// Address of the admin HTTP server; overrides `connection.monitoring.listen`
    /// (port 0 picks a free port, logged at start).
    #[arg(long, global = true)]
    admin_listen: Option<String>,
    /// Data plane: `auto` (io_uring, else epoll), `io_uring` or `epoll`; overrides the
    /// `data_plane` key and the SSSONECTOR_DATA_PLANE environment variable.
    #[arg(long, global = true)]
    data_plane: Option<sssonector::config::DataPlaneSetting>,
    /// Log line format on stderr: `text` or `json` (one object per line, for collectors).
    #[arg(long, global = true, default_value = "text")]
    log_format: sssonector::logging::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and print it with every default filled in.
    Check,
    /// Run the proxy on the embedded default config in front of a built-in echo upstream,
    /// drive a short load through it and print what it measured.
    Demo {
        /// Stop after this long (e.g. `30s`); without it the demo runs until Ctrl-C.
        #[arg(long, value_parser = sssonector::config::duration::parse)]
        duration: Option<Duration>,
    },
    /// Ask a running proxy's admin server whether it is alive (`/healthz`) or, with
    /// `--ready`, ready (`/readyz`); exit 0 or 1 with one line naming the address and the
    /// cause. The container image's HEALTHCHECK: it needs no shell or curl. The address is
    /// `--admin-listen`, else the `--config` file's `connection.monitoring.listen`.
    Healthcheck {
        /// Ask `/readyz` instead of `/healthz`.
        #[arg(long)]
        ready: bool,
        /// Give up (and fail) after this long, connect and answer included.
        #[arg(long, default_value = "2s", value_parser = sssonector::config::duration::parse)]
        timeout: Duration,
    },
}

/// A container passes its upstream as `SSSONECTOR_UPSTREAM=host:port[,host:port...]`
/// (and, optionally, its listen address as `SSSONECTOR_LISTEN`): the same listener as
/// `--listen/--upstream`, for images whose command line is fixed.
const UPSTREAM_ENV: &str = "SSSONECTOR_UPSTREAM";
const LISTEN_ENV: &str = "SSSONECTOR_LISTEN";
/// Where the env listener accepts when `SSSONECTOR_LISTEN` is not set: every interface,
/// as a container's published port needs.
const DEFAULT_ENV_LISTEN: &str = "0.0.0.0:8443";

fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    sssonector::logging::init(cli.log_format);
    listener_from_env(&mut cli);

    match cli.command {
        Some(Command::Healthcheck { ready, timeout }) => healthcheck(&cli, ready, timeout),
        Some(Command::Demo { duration }) => report(sssonector::demo::run(duration)),
        Some(Command::Check) => match load_config(&cli) {
            Ok(config) => {
                print!("{}", config.to_effective_yaml());
                // Which data plane a start would get here (a YAML comment: the output
                // stays a loadable config).
                match sssonector::proxy::plan_for(&config) {
                    Ok(plan) => {
                        println!("# {}", plan.summary());
                        if let Some(why) = &plan.fallback {
                            println!("# warning: {why}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => report(Err(e)),
                }
            }
            Err(e) => report(Err(e)),
        },
        None => match load_config(&cli) {
            Ok(config) => report(run(config, cli)),
            Err(e) => report(Err(e)),
        },
    }
}

/// Fills `--listen/--upstream` from `SSSONECTOR_UPSTREAM`/`SSSONECTOR_LISTEN` when neither
/// flag is given. Flags win: the environment is the image's default, the command line the
/// operator's choice.
fn listener_from_env(cli: &mut Cli) {
    if cli.listen.is_some() || !cli.upstream.is_empty() {
        return;
    }
    let Ok(upstreams) = std::env::var(UPSTREAM_ENV) else {
        return;
    };
    let upstreams: Vec<String> = upstreams
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    if upstreams.is_empty() {
        return;
    }
    cli.listen = Some(std::env::var(LISTEN_ENV).unwrap_or_else(|_| DEFAULT_ENV_LISTEN.into()));
    cli.upstream = upstreams;
}

/// `sssonector healthcheck`: 0 when the admin server answers 200, 1 otherwise.
fn healthcheck(cli: &Cli, ready: bool, timeout: Duration) -> ExitCode {
    use sssonector::healthcheck::{admin_address, check, Probe};
    let probe = if ready { Probe::Ready } else { Probe::Health };
    let result = admin_address(cli.config.as_deref(), cli.admin_listen.as_deref())
        .and_then(|addr| check(addr, probe, timeout).map(|body| (addr, body)));
    match result {
        Ok((addr, body)) => {
            println!(
                "sssonector healthcheck: http://{addr}{}: {body}",
                probe.path()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sssonector healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}

/// Builds the config from `--config` and/or `--listen/--upstream/--workers/--admin-listen`,
/// and tries its listen addresses (a busy port is the configuration's problem, reported
/// with the key and line, for `check` as for a start).
fn load_config(cli: &Cli) -> Result<Config, ProxyError> {
    let config = read_config(cli)?;
    config.probe_listeners()?;
    Ok(config)
}

/// The config from the file and flags, validated, without the trial bind: a reload reads
/// it again while the running proxy holds its listen addresses.
fn read_config(cli: &Cli) -> Result<Config, ProxyError> {
    let mut config = Config::from_cli_with_admin(
        cli.config.as_deref(),
        cli.listen.as_deref(),
        &cli.upstream,
        cli.workers.as_deref(),
        cli.admin_listen.as_deref(),
    )?;
    if let Some(data_plane) = cli.data_plane {
        config.data_plane = data_plane;
    }
    Ok(config)
}

fn run(config: Config, cli: Cli) -> Result<(), ProxyError> {
    let signals = sssonector::signals::ProcessSignals::install()?;
    // Kept to report a bind that fails after the probe (a port taken in between) as the
    // configuration error it is.
    let loaded = config.clone();
    let mut handle = sssonector::start(config).map_err(|e| match e {
        ProxyError::Bind { name, addr, source }
            if sssonector::config::is_bind_config_error(&source) =>
        {
            ProxyError::Config(loaded.bind_error(&name, addr, &source))
        }
        other => other,
    })?;
    let started = handle.start_admin().and_then(|_| {
        // A reload reads the file and flags again, exactly as at start (and as `check`,
        // less the trial bind of addresses this proxy holds).
        signals.spawn(
            handle.shutdown_trigger(),
            handle.view(),
            handle.reloader(),
            Box::new(move || read_config(&cli)),
        )
    });
    if let Err(e) = started {
        let _ = handle.shutdown();
        return Err(e);
    }
    handle.wait()
}

/// Maps a result to the exit code: 0 ok, 2 bad config or usage, 1 runtime failure.
fn report(result: Result<(), ProxyError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sssonector: {e}");
            match e {
                ProxyError::Config(_) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}
