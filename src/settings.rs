//! What a worker applies from the config: [`Settings`], and [`LiveConfig`], what a
//! reload hands the running workers.

use std::time::Duration;

use crate::config::{Balance, Config, SendMode};
use crate::driver::MAX_IOV;

/// How often a worker publishes its counters, refills its pool and checks endpoint health.
pub const TICK: Duration = Duration::from_millis(100);

/// Per-worker settings derived from the config.
#[derive(Clone)]
pub(crate) struct Settings {
    pub max_in_flight: usize,
    pub send_mode: SendMode,
    pub pool_enabled: bool,
    /// Sessions without traffic for this long are closed; `None`: never.
    pub session_idle_timeout: Option<Duration>,
    /// Sessions whose peer took no byte for this long while data waited are closed;
    /// `None`: never.
    pub send_timeout: Option<Duration>,
    pub queue_timeout: Duration,
    pub max_retries: u32,
    pub retry_interval: Duration,
    pub balance: Balance,
    pub health_enabled: bool,
    /// How often the sweep walks the idle pool, the active list and the queue.
    pub sweep_every: Duration,
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Settings {
        let conn = &config.connection;
        Settings {
            max_in_flight: conn.buffer.max_in_flight.clamp(1, MAX_IOV),
            send_mode: conn.buffer.send_mode,
            pool_enabled: conn.pool.enabled && conn.pool.max_idle > 0,
            session_idle_timeout: conn.session.idle_limit(),
            send_timeout: conn.session.send_limit(),
            queue_timeout: conn.pool.queue_timeout,
            max_retries: conn.pool.max_retries,
            retry_interval: conn.pool.retry_interval,
            balance: conn.pool.balance,
            health_enabled: conn.health_check.enabled,
            sweep_every: sweep_period(config),
        }
    }
}

/// How often the sweep runs: a tenth of the shortest timer it serves, between 100 ms and 1 s.
fn sweep_period(config: &Config) -> Duration {
    let c = &config.connection;
    let mut shortest = c.pool.idle_timeout.min(c.pool.queue_timeout);
    if let Some(session) = c.session.idle_limit() {
        shortest = shortest.min(session);
    }
    if let Some(send) = c.session.send_limit() {
        shortest = shortest.min(send);
    }
    if c.health_check.enabled {
        shortest = shortest.min(c.health_check.interval);
    }
    (shortest / 10).clamp(TICK, Duration::from_secs(1))
}

/// What the workers apply from a reload.
#[derive(Clone)]
pub(crate) struct LiveConfig {
    pub settings: Settings,
    /// Endpoint ids of each listener, in config order.
    pub listener_endpoints: Vec<Vec<usize>>,
    pub connect_timeout: Duration,
    pub retry_interval: Duration,
}

impl LiveConfig {
    pub fn new(config: &Config, listener_endpoints: Vec<Vec<usize>>) -> LiveConfig {
        let pool = &config.connection.pool;
        LiveConfig {
            settings: Settings::from_config(config),
            listener_endpoints,
            connect_timeout: pool.connect_timeout,
            retry_interval: pool.retry_interval,
        }
    }
}
