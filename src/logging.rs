//! Logging: the subscriber (`tracing` to stderr, text or JSON, filtered by
//! `SSSONECTOR_LOG` or else `RUST_LOG`), and rate limiting for errors that can repeat in
//! a loop.

use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`text` or `json` expected, got `{s}`")),
        }
    }
}

/// The filter: `SSSONECTOR_LOG`, else `RUST_LOG`, else `info`. An invalid filter falls
/// back to `info` with a warning (returned, to log once the subscriber is up).
fn filter() -> (EnvFilter, Option<String>) {
    for var in ["SSSONECTOR_LOG", "RUST_LOG"] {
        match std::env::var(var) {
            Ok(v) => match EnvFilter::try_new(&v) {
                Ok(f) => return (f, None),
                Err(e) => {
                    return (
                        EnvFilter::new("info"),
                        Some(format!(
                            "{var}={v:?} is not a valid filter ({e}); using `info`"
                        )),
                    )
                }
            },
            Err(_) => continue,
        }
    }
    (EnvFilter::new("info"), None)
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let (filter, problem) = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
}

/// Lets one line through per `period`, counting the ones held back meanwhile, so an
/// error that repeats in a loop (a failed accept under EMFILE) logs one line with a count.
#[derive(Debug)]
pub struct RateLimited {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimited {
    pub fn new(period: Duration) -> RateLimited {
        RateLimited {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were held
    /// back since the last line; `None` when it is held back.
    pub fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    pub fn hit_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// A worker's rate limits for errors that can repeat in a loop.
pub(crate) struct LogLimits {
    /// Failed accepts (EMFILE, ENFILE): one line per 10 s.
    pub accept: RateLimited,
    /// Errors on established sessions: one line per second.
    pub peer_errors: RateLimited,
    /// Upstream sockets that cannot be created (out of descriptors): one line per second.
    pub upstream_socket: RateLimited,
    /// Completions the kernel dropped (EBADR): one line per 10 s. A ring that overflows
    /// once tends to overflow many times; a line each would stall the worker on stderr.
    pub dropped_completion: RateLimited,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            accept: RateLimited::new(Duration::from_secs(10)),
            peer_errors: RateLimited::new(Duration::from_secs(1)),
            upstream_socket: RateLimited::new(Duration::from_secs(1)),
            dropped_completion: RateLimited::new(Duration::from_secs(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_limits_every_error_that_can_repeat_in_its_loop() {
        let mut l = LogLimits::default();
        let t0 = Instant::now();
        for r in [
            &mut l.accept,
            &mut l.peer_errors,
            &mut l.upstream_socket,
            &mut l.dropped_completion,
        ] {
            assert_eq!(r.hit_at(t0), Some(0));
            assert_eq!(r.hit_at(t0 + Duration::from_millis(10)), None);
        }
    }

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let mut r = RateLimited::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.hit_at(t0), Some(0));
        for i in 1..100 {
            assert_eq!(r.hit_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit_at(t0 + Duration::from_secs(11)), Some(99));
    }
}
