//! Process signals: SIGTERM and SIGINT start a graceful drain, a second one stops at once.
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

use crate::config::ShutdownConfig;
use crate::error::ProxyError;
use crate::view::ProxyView;
use crate::worker::ShutdownTrigger;

/// SIGINT/SIGTERM handlers, installed before the proxy starts so that a signal that
/// arrives during startup is kept and acted on, not fatal.
pub struct DrainSignals {
    signals: signal_hook::iterator::Signals,
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> ProxyError {
    let what = what.to_string();
    move |source| ProxyError::Internal { what, source }
}

impl DrainSignals {
    pub fn install() -> Result<DrainSignals, ProxyError> {
        let signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
            .map_err(internal("cannot install signal handlers"))?;
        Ok(DrainSignals { signals })
    }

    /// Starts the threads that wait for the signals and run the drain.
    pub fn spawn_drain(
        self,
        trigger: ShutdownTrigger,
        view: ProxyView,
        cfg: ShutdownConfig,
    ) -> Result<JoinHandle<()>, ProxyError> {
        let mut signals = self.signals;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sssonector-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            })
            .map_err(internal("cannot spawn the signal thread"))?;
        std::thread::Builder::new()
            .name("sssonector-drain".into())
            .spawn(move || {
                if let Ok(sig) = rx.recv() {
                    drain(sig, &rx, &trigger, &view, &cfg);
                }
            })
            .map_err(internal("cannot spawn the drain thread"))
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
