//! Saturating time arithmetic: a configured duration (up to Go's maximum, ~292 years)
//! added to a clock reading never panics, and never wraps when turned into milliseconds.

use std::time::{Duration, Instant};

/// `now + d`, or the latest instant this clock can represent near that when it overflows
/// (which, for every practical purpose, is "never").
pub fn after(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    // Halve the step until it fits: at most 64 steps, only for absurd durations.
    let mut t = now;
    let mut step = d;
    while step > Duration::ZERO {
        match t.checked_add(step) {
            Some(next) => t = next,
            None => step /= 2,
        }
    }
    t
}

/// `d` in whole milliseconds, saturating at `u64::MAX` instead of truncating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_durations_saturate() {
        let now = Instant::now();
        let far = after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(1 << 40));
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
    }
}
