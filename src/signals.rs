//! Process signals: SIGTERM and SIGINT start a graceful drain, a second one stops at
//! once, one after the drain thread is done ends the process (default action); SIGHUP
//! reloads the configuration file ([`crate::reload`]) on a thread of its own, and is
//! ignored once a stop has begun.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{Config, ShutdownConfig};
use crate::error::ProxyError;
use crate::proxy::ShutdownTrigger;
use crate::reload::Reloader;
use crate::view::ProxyView;

/// Loads the configuration again, exactly as at start (file and flags).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, ProxyError> + Send>;

/// SIGINT/SIGTERM/SIGHUP handlers, installed before the proxy starts so that a signal
/// that arrives during startup is kept and acted on, not fatal.
pub struct ProcessSignals {
    signals: signal_hook::iterator::Signals,
    /// Set once the drain thread is done: SIGINT and SIGTERM then take their default
    /// action (the process ends), so a stop that hangs can still be ended by a signal.
    default_again: Arc<AtomicBool>,
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> ProxyError {
    let what = what.to_string();
    move |source| ProxyError::Internal { what, source }
}

impl ProcessSignals {
    pub fn install() -> Result<ProcessSignals, ProxyError> {
        let default_again = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            signal_hook::flag::register_conditional_default(sig, default_again.clone())
                .map_err(internal("cannot install signal handlers"))?;
        }
        let signals =
            signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
                .map_err(internal("cannot install signal handlers"))?;
        Ok(ProcessSignals {
            signals,
            default_again,
        })
    }

    /// Starts the thread that waits for signals, the one that runs reloads and the one
    /// that runs the drain. The signal thread never blocks: SIGTERM begins the drain
    /// (`/readyz` fails) at once, even while a reload (and its DNS lookups) runs.
    pub fn spawn(
        self,
        trigger: ShutdownTrigger,
        view: ProxyView,
        reloader: Arc<Reloader>,
        load: ConfigLoader,
    ) -> Result<JoinHandle<()>, ProxyError> {
        let ProcessSignals {
            mut signals,
            default_again,
        } = self;
        let (stop_tx, stop_rx) = mpsc::channel();
        let (reload_tx, reload_rx) = mpsc::channel::<()>();
        // Read by the drain without the reload's lock.
        let shutdown = reloader.shutdown_settings();
        let reload_view = view.clone();
        std::thread::Builder::new()
            .name("sssonector-reload".into())
            .spawn(move || {
                while reload_rx.recv().is_ok() {
                    // SIGHUPs that came during a reload make one more reload, not many.
                    while reload_rx.try_recv().is_ok() {}
                    if reload_view.is_draining() {
                        tracing::warn!("SIGHUP while draining: not reloading");
                    } else {
                        reload(&reloader, &load);
                    }
                }
            })
            .map_err(internal("cannot spawn the reload thread"))?;
        let begin = trigger.clone();
        std::thread::Builder::new()
            .name("sssonector-signals".into())
            .spawn(move || {
                let mut stopping = false;
                for sig in signals.forever() {
                    if sig == libc::SIGHUP {
                        if stopping {
                            tracing::warn!("SIGHUP after SIGTERM/SIGINT: ignored, stopping");
                        } else {
                            let _ = reload_tx.send(());
                        }
                        continue;
                    }
                    if !stopping {
                        stopping = true;
                        begin.begin_drain();
                    }
                    if stop_tx.send(sig).is_err() {
                        break;
                    }
                }
            })
            .map_err(internal("cannot spawn the signal thread"))?;
        std::thread::Builder::new()
            .name("sssonector-drain".into())
            .spawn(move || {
                if let Ok(sig) = stop_rx.recv() {
                    let cfg = shutdown.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    drain(sig, &stop_rx, &trigger, &view, &cfg);
                }
                default_again.store(true, Ordering::Release);
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
