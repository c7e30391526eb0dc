//! [`Lifetime`]: how long a server keeps the pooled connections nobody uses, learned
//! from its closes, and when the pool retires connections before it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a server keeps connections nobody speaks on, learned from its closes.
#[derive(Debug, Default)]
pub(crate) struct Lifetime {
    /// Age and time of the last few server-side closes, newest last.
    recent: VecDeque<(Duration, Instant)>,
    pub learned: Option<Duration>,
    /// When `learned` was set: it lapses after [`Lifetime::lapse`].
    learned_at: Option<Instant>,
    pub warned: bool,
}

/// Server-side closes that must agree before a lifetime is believed.
const LIFETIME_SAMPLES: usize = 3;

/// Shorter lifetimes are not learned: such a server is not kept warm at all (see
/// `young_close` in [`PoolState::on_event`]).
const MIN_LIFETIME: Duration = Duration::from_millis(10);

impl Lifetime {
    /// Records a close by the server, at `now`, of a connection pooled for `age`. A
    /// lifetime is learned when the last few closes happened at about the same age
    /// (within a fifth), shorter than `idle_timeout`, and not all at once: a server
    /// restart closes connections of every age, and one that closes a batch pooled
    /// together (at startup) looks like a timeout only once it happens again. Returns
    /// the lifetime when it is new or shorter than the one known.
    pub fn observe(
        &mut self,
        age: Duration,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<Duration> {
        if self.recent.len() == LIFETIME_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back((age, now));
        if self.recent.len() < LIFETIME_SAMPLES {
            return None;
        }
        let ages = || self.recent.iter().map(|(a, _)| *a);
        let min = ages().min().unwrap_or_default();
        let max = ages().max().unwrap_or_default();
        let first = self.recent.iter().map(|(_, t)| *t).min().unwrap_or(now);
        let spread_in_time = now.saturating_duration_since(first) >= min / 2;
        if max - min > max / 5 || !spread_in_time || min >= idle_timeout || min < MIN_LIFETIME {
            return None;
        }
        if self.learned.is_some_and(|t| t <= min) {
            return None;
        }
        self.learned = Some(min);
        self.learned_at = Some(now);
        Some(min)
    }

    /// How long a learned lifetime is believed. Retiring connections before the server
    /// closes them also hides from the pool whether the server still does (its timeout
    /// may have been raised, or one middlebox taught it wrong): after this the pool lets
    /// connections live to `idle_timeout` again and learns anew if closes come back.
    fn lapse(t: Duration) -> Duration {
        (t * 30).max(Duration::from_secs(60))
    }

    /// Forgets a lifetime learned longer ago than its lapse.
    pub fn forget_if_lapsed(&mut self, now: Instant) {
        if let (Some(t), Some(at)) = (self.learned, self.learned_at) {
            if now.saturating_duration_since(at) >= Lifetime::lapse(t) {
                self.learned = None;
                self.learned_at = None;
                self.recent.clear();
            }
        }
    }

    /// Connections older than this are retired: a fifth before the server would close them.
    pub fn retire_age(&self, idle_timeout: Duration) -> Duration {
        match self.learned {
            Some(t) => idle_timeout.min(t * 4 / 5),
            None => idle_timeout,
        }
    }
}
