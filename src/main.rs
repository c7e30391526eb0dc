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
    admin_listen: Option<std::net::SocketAddr>,
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
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    sssonector::logging::init(cli.log_format);

    match cli.command {
        Some(Command::Demo { duration }) => report(sssonector::demo::run(duration)),
        Some(Command::Check) => match load_config(&cli) {
            Ok(config) => {
                print!("{}", config.to_effective_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => report(Err(e)),
        },
        None => match load_config(&cli) {
            Ok(config) => report(run(config, cli)),
            Err(e) => report(Err(e)),
        },
    }
}

/// Builds the config from `--config` and/or `--listen/--upstream/--workers`.
fn load_config(cli: &Cli) -> Result<Config, ProxyError> {
    let mut config = Config::from_cli(
        cli.config.as_deref(),
        cli.listen.as_deref(),
        &cli.upstream,
        cli.workers.as_deref(),
    )?;
    if let Some(addr) = cli.admin_listen {
        config.connection.monitoring.listen = addr;
    }
    Ok(config)
}

fn run(config: Config, cli: Cli) -> Result<(), ProxyError> {
    let signals = sssonector::signals::ProcessSignals::install()?;
    let mut handle = sssonector::start(config)?;
    let started = handle.start_admin().and_then(|_| {
        // A reload reads the file and flags again, exactly as at start (and as `check`).
        signals.spawn(
            handle.shutdown_trigger(),
            handle.view(),
            handle.reloader(),
            Box::new(move || load_config(&cli)),
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
