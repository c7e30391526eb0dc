//! A log-linear latency histogram and the percentiles it reports.

use std::fmt;
use std::time::Duration;

/// Sub-bucket bits: 32 linear sub-buckets per power of two, so a bucket spans at most ~3% of
/// its values, in constant memory whatever the run length.
const SUB_BITS: u32 = 5;
const SUB_MASK: u64 = (1 << SUB_BITS) - 1;

/// A log-linear histogram of nanosecond values.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; 64 << SUB_BITS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v <= SUB_MASK {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS here
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) & SUB_MASK;
        ((u64::from(shift + 1) << SUB_BITS) | mantissa) as usize
    }

    /// The largest value that lands in bucket `idx`.
    fn upper_bound(idx: usize) -> u64 {
        let bucket = (idx as u64) >> SUB_BITS;
        let m = (idx as u64) & SUB_MASK;
        if bucket == 0 {
            return m;
        }
        let shift = bucket - 1;
        (((1 << SUB_BITS) | m) << shift) + ((1u64 << shift) - 1)
    }

    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's bound (never above max).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper_bound(idx).min(self.max);
            }
        }
        self.max
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.total,
            p50: Duration::from_nanos(self.quantile(0.50)),
            p90: Duration::from_nanos(self.quantile(0.90)),
            p99: Duration::from_nanos(self.quantile(0.99)),
            max: Duration::from_nanos(self.max),
        }
    }
}

/// Latency percentiles of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  max {}",
            fmt_latency(self.p50),
            fmt_latency(self.p90),
            fmt_latency(self.p99),
            fmt_latency(self.max)
        )
    }
}

/// A latency in the unit that keeps it readable: `87 µs`, `1.24 ms`, `2.50 s`.
pub fn fmt_latency(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.2} s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for v in [
            0u64,
            1,
            31,
            32,
            63,
            64,
            65,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 3,
        ] {
            let idx = Histogram::index(v);
            assert!(Histogram::upper_bound(idx) >= v, "v={v}");
            // Within ~3% (one sub-bucket) of the value.
            assert!(Histogram::upper_bound(idx) - v <= v / 32 + 1, "v={v}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let p50 = s.p50.as_nanos() as f64;
        assert!((500_000.0..=520_000.0).contains(&p50), "p50={p50}");
        assert_eq!(s.max, Duration::from_micros(1000));
    }
}
