//! Log helpers: rate limiting for errors that can repeat in a loop.

use std::time::{Duration, Instant};

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

#[cfg(test)]
mod tests {
    use super::*;

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
