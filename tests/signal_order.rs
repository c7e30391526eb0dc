//! Signal handling in this test process (its own binary, so the signals sent here reach
//! no other test): SIGTERM begins the drain at once even while a reload is running (its
//! loader here takes 3 s, as a slow DNS lookup would), and a SIGHUP after SIGTERM is
//! ignored.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::*;

fn raise(sig: i32) {
    signal_hook::low_level::raise(sig).expect("raise");
}

#[test]
fn sigterm_begins_the_drain_while_a_reload_runs_and_a_later_sighup_is_ignored() {
    let up = Upstream::echo();
    let mut config = test_config(&[&[up.addr]], 1, "");
    // Long enough that the drain is still in its first step when the test ends.
    config.shutdown.drain_delay = Duration::from_secs(30);
    let signals = sssonector::signals::ProcessSignals::install().expect("install");
    let handle = sssonector::start(config.clone()).expect("start");
    let view = handle.view();
    let loads = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered) = mpsc::channel();
    let counted = loads.clone();
    signals
        .spawn(
            handle.shutdown_trigger(),
            handle.view(),
            handle.reloader(),
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = entered_tx.send(());
                std::thread::sleep(Duration::from_secs(3));
                Ok(config.clone())
            }),
        )
        .expect("spawn");

    raise(libc::SIGHUP);
    entered
        .recv_timeout(Duration::from_secs(5))
        .expect("the reload started");
    let sent = Instant::now();
    raise(libc::SIGTERM);
    while !view.stats().draining {
        assert!(
            sent.elapsed() < Duration::from_millis(1500),
            "SIGTERM waited behind the reload"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(view.readiness().draining, "/readyz fails at once");

    raise(libc::SIGHUP);
    // The first reload ends 3 s after it began; a reload for the second SIGHUP would
    // start right after it.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "a SIGHUP after SIGTERM reloaded"
    );
    handle.shutdown().expect("stop");
}
