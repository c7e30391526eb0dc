//! The pool keeper: a control thread that watches every idle pooled connection with one
//! epoll (a close or reset by the server is seen when it happens, greeting queued or
//! not), expires and retires idle connections, flushes endpoints that went down, and
//! wakes a worker to replace what left.

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pool::{Removed, WAKE_DATA};
use super::{EndpointTable, WarmPool};
use crate::driver::sys;

/// The longest the keeper sleeps: how soon it notices a health flush or a stop at worst
/// (both also wake it at once).
const KEEPER_TICK: Duration = Duration::from_millis(100);

/// What the keeper needs from the rest of the proxy.
pub(crate) trait KeeperHost: Send + Sync + 'static {
    fn pool(&self) -> &WarmPool;
    fn endpoints(&self) -> &EndpointTable;
    fn stopping(&self) -> bool;
    /// Asks some worker to refill the pool (round robin over `n`).
    fn wake_worker(&self, n: usize);
}

/// Starts the keeper; it closes the pool and ends when the proxy stops.
pub(crate) fn spawn<H: KeeperHost>(host: std::sync::Arc<H>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sssonector-pool".into())
        .spawn(move || run(&*host))
}

fn run<H: KeeperHost>(host: &H) {
    let pool = host.pool();
    let mut events = Vec::new();
    let mut woken = 0usize;
    while !host.stopping() {
        let now = Instant::now();
        let timeout = pool
            .lock()
            .next_deadline()
            .map(|d| d.saturating_duration_since(now).min(KEEPER_TICK))
            .unwrap_or(KEEPER_TICK);
        // Rounded up: waking a millisecond early would only sleep again.
        let timeout_ms = timeout.as_micros().div_ceil(1000) as i32;
        if let Err(e) = sys::epoll_wait(pool.epoll.as_raw_fd(), &mut events, timeout_ms) {
            tracing::error!("internal: the pool keeper cannot wait for events: {e}");
            std::thread::sleep(KEEPER_TICK);
            continue;
        }
        let now = Instant::now();
        let mut removed = Removed {
            fds: Vec::new(),
            learned: Vec::new(),
            replace: 0,
        };
        {
            let mut st = pool.lock();
            for &(data, bits) in &events {
                if data == WAKE_DATA {
                    sys::eventfd_drain(pool.wake.as_raw_fd());
                } else {
                    st.on_event(pool, data, bits, now, &mut removed);
                }
            }
            let table = host.endpoints();
            st.sweep(pool, now, |ep| table.down_epoch(ep), &mut removed);
        }
        // Closed outside the lock: a taker never waits for a close. What a server sent
        // first is discarded, so the server sees a FIN rather than a reset.
        for fd in removed.fds.drain(..) {
            sys::discard_unread(fd.as_raw_fd());
        }
        let idle_timeout = pool.idle_timeout();
        for (ep, t) in removed.learned {
            tracing::warn!(
                upstream = %host.endpoints().get(ep).addr,
                "upstream: the server closes pooled connections nobody uses after about {:.1?} \
                 (pool.idle_timeout is {:?}); retiring them at {:.1?} from now on. Set \
                 connection.pool.idle_timeout below {:.1?} to keep this from happening",
                t,
                idle_timeout,
                t * 4 / 5,
                t
            );
        }
        if removed.replace > 0 {
            host.wake_worker(woken);
            woken = woken.wrapping_add(1);
        }
    }
    pool.close();
}
