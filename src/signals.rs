//! Process signals: SIGTERM and SIGINT start a graceful drain, a second one stops at
//! once; SIGHUP reloads the configuration file ([`crate::reload`]).
//!
//! The drain, on its own control thread:
//! 1. at once: `/readyz` fails (load balancers and kube-proxy stop routing here);
//!    listeners keep accepting for `shutdown.drain_delay`;
//! 2. then the listeners close (a connect is refused) and the idle pools close; sessions
//!    in flight finish, and each worker stops when its last one ends;
//! 3. sessions still open after `shutdown.grace_period` are closed.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::Arc;

use crate::config::{Config, ShutdownConfig};
use crate::error::ProxyError;
use crate::reload::Reloader;
use crate::view::ProxyView;
use crate::worker::ShutdownTrigger;

/// Loads the configuration again, exactly as at start (file and flags).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, ProxyError> + Send>;

/// SIGINT/SIGTERM/SIGHUP handlers, installed before the proxy starts so that a signal
/// that arrives during startup is kept and acted on, not fatal.
pub struct ProcessSignals {
    signals: signal_hook::iterator::Signals,
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> ProxyError {
    let what = what.to_string();
    move |source| ProxyError::Internal { what, source }
}

impl ProcessSignals {
    pub fn install() -> Result<ProcessSignals, ProxyError> {
        let signals =
            signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
                .map_err(internal("cannot install signal handlers"))?;
        Ok(ProcessSignals { signals })
    }

    /// Starts the thread that waits for signals (and runs reloads) and the one that runs
    /// the drain.
    pub fn spawn(
        self,
        trigger: ShutdownTrigger,
        view: ProxyView,
        reloader: Arc<Reloader>,
        load: ConfigLoader,
    ) -> Result<JoinHandle<()>, ProxyError> {
        let mut signals = self.signals;
        let (tx, rx) = mpsc::channel();
        let for_drain = reloader.clone();
        let drain_view = view.clone();
        std::thread::Builder::new()
            .name("sssonector-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == libc::SIGHUP {
                        if view.stats().draining {
                            tracing::warn!("SIGHUP while draining: not reloading");
                        } else {
                            reload(&reloader, &load);
                        }
                    } else if tx.send(sig).is_err() {
                        break;
                    }
                }
            })
            .map_err(internal("cannot spawn the signal thread"))?;
        std::thread::Builder::new()
            .name("sssonector-drain".into())
            .spawn(move || {
                if let Ok(sig) = rx.recv() {
                    let cfg = for_drain.shutdown_config();
                    drain(sig, &rx, &trigger, &drain_view, &cfg);
                }
            })
            .map_err(internal("cannot spawn the drain thread"))
    }
}

/// Loads the file again and applies it; any error leaves the running configuration.
fn reload(reloader: &Reloader, load: &ConfigLoader) {
    tracing::info!("SIGHUP: reloading the configuration");
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            // The same text `sssonector check` prints for this file.
            tracing::error!("reload rejected, the running configuration is unchanged: {e}");
            return;
        }
    };
    match reloader.reload(config) {
        Ok(outcome) => tracing::info!(
            added = ?outcome.added,
            retired = ?outcome.retired,
            "configuration reloaded"
        ),
        Err(e) => tracing::error!("{e}"),
    }
}

/// Runs the drain after the first signal `sig`; any further signal stops at once.
fn drain(
    sig: i32,
    signals: &Receiver<i32>,
    trigger: &ShutdownTrigger,
    view: &ProxyView,
    cfg: &ShutdownConfig,
) {
    trigger.begin_drain();
    tracing::info!(
        signal = sig,
        "draining: /readyz fails now, listeners close in {:?}, sessions then have {:?} to finish; \
         send the signal again to stop at once",
        cfg.drain_delay,
        cfg.grace_period
    );
    if !wait_or_signal(signals, cfg.drain_delay, trigger) {
        return;
    }
    trigger.close_listeners();
    let sessions = view.stats().total.sessions_active;
    tracing::info!(
        sessions,
        "listeners closed; waiting for the sessions in flight"
    );
    if !wait_or_signal(signals, cfg.grace_period, trigger) {
        return;
    }
    let sessions = view.stats().total.sessions_active;
    tracing::warn!(
        sessions,
        "grace period of {:?} over: closing the sessions left",
        cfg.grace_period
    );
    trigger.trigger();
}

/// Waits `d`; `false` when another signal came (and the proxy was stopped) or the
/// process is ending.
fn wait_or_signal(signals: &Receiver<i32>, d: Duration, trigger: &ShutdownTrigger) -> bool {
    match signals.recv_timeout(d) {
        Err(RecvTimeoutError::Timeout) => true,
        Ok(sig) => {
            tracing::warn!(signal = sig, "second signal: stopping now");
            trigger.trigger();
            false
        }
        Err(RecvTimeoutError::Disconnected) => false,
    }
}
