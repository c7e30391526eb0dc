//! Go durations (`time.ParseDuration`): the spec's syntax, parsed and printed without
//! humantime, whose units differ (`M` is months there, and it refuses `.5s`).
//!
//! Accepted: an optional `+`, then one or more `<number><unit>` parts with no spaces
//! between them, where a number is decimal with an optional fraction (`1`, `1.5`, `.5`,
//! `5.`) and a unit is one of `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`; or a plain `0`.
//! Refused: negative values, a missing or unknown unit (with a hint for `d`, `y`, `M`,
//! `sec`, `min`...), and anything longer than Go's maximum (`2562047h47m16.854775807s`).

use std::fmt::Write as _;
use std::time::Duration;

/// Go's longest duration: `i64::MAX` nanoseconds, about 292 years. Nothing longer is
/// accepted, so no timer derived from a config can overflow `Instant + Duration`.
pub const MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

/// The valid units, as listed in error messages.
pub const UNITS: &str = "ns, us (or µs), ms, s, m, h";

/// What a duration looks like, for the start of error messages.
pub const EXPECTED: &str = "a Go duration such as `300ms`, `5s`, `1.5h` or `2h45m`";

const NANOS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 MICRO SIGN
    ("μs", 1_000), // U+03BC GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration. The error is the reason only (the caller adds the key and the
/// value).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!(
            "an empty value is not a duration; valid units: {UNITS}"
        ));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let body = match s.as_bytes()[0] {
        b'-' => return Err("a duration cannot be negative".to_string()),
        b'+' => &s[1..],
        _ => s,
    };
    if body.is_empty() {
        return Err("a number and a unit expected after the sign".to_string());
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let (whole, frac, after) = split_number(rest)?;
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let unit = &after[..unit_len];
        let per = unit_nanos(unit)?;
        total = total.saturating_add(part_nanos(whole, frac, per));
        if total > MAX.as_nanos() {
            return Err(format!(
                "too long: the longest duration is {} (about 292 years)",
                format(MAX)
            ));
        }
        rest = &after[unit_len..];
    }
    let secs = (total / 1_000_000_000) as u64;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `12.5ms...` -> (`12`, `5`, `ms...`): the digits before and after the point.
fn split_number(s: &str) -> Result<(&str, &str, &str), String> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (whole, after_int) = s.split_at(int_len);
    let (frac, after) = match after_int.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            f.split_at(n)
        }
        None => ("", after_int),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(if s.starts_with(char::is_whitespace) {
            format!("no spaces inside a duration: write the parts together, e.g. `1m30s`; valid units: {UNITS}")
        } else {
            format!("a number expected before `{s}`; valid units: {UNITS}")
        });
    }
    if after.is_empty() {
        return Err(format!(
            "a unit is required after the number; valid units: {UNITS}"
        ));
    }
    Ok((whole, frac, after))
}

/// Nanoseconds in one `unit`, or why it is not a unit.
fn unit_nanos(unit: &str) -> Result<u128, String> {
    if let Some((_, n)) = NANOS.iter().find(|(u, _)| *u == unit) {
        return Ok(*n);
    }
    if unit.contains(char::is_whitespace) {
        return Err(format!(
            "no spaces inside a duration: write the parts together, e.g. `1m30s`; valid units: {UNITS}"
        ));
    }
    let hint = match unit {
        "d" | "day" | "days" => "Go durations have no day unit; write 24h for a day".to_string(),
        "w" | "week" | "weeks" => "Go durations have no week unit; write 168h for a week".into(),
        "y" | "year" | "years" => "Go durations have no year unit; write 8760h for a year".into(),
        "M" => "`M` is not minutes (it means months elsewhere): write `m` for minutes".into(),
        "S" | "H" | "MS" | "NS" | "US" | "Ms" => format!(
            "units are lower case: write `{}`",
            unit.to_ascii_lowercase()
        ),
        "sec" | "secs" | "second" | "seconds" => "write `s` for seconds".into(),
        "min" | "mins" | "minute" | "minutes" => "write `m` for minutes".into(),
        "hr" | "hrs" | "hour" | "hours" => "write `h` for hours".into(),
        "msec" | "msecs" | "millis" => "write `ms` for milliseconds".into(),
        other => format!("unknown unit `{other}`"),
    };
    Err(format!("{hint}; valid units: {UNITS}"))
}

/// `whole.frac` units of `per` nanoseconds, truncated to whole nanoseconds (saturating:
/// the caller compares with [`MAX`]).
fn part_nanos(whole: &str, frac: &str, per: u128) -> u128 {
    // Digits past 40 cannot matter (per <= 3.6e12 ns) and would overflow.
    let whole: u128 = if whole.len() > 30 {
        u128::MAX
    } else {
        whole.parse().unwrap_or(0)
    };
    let mut nanos = whole.saturating_mul(per);
    let frac = &frac[..frac.len().min(20)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().unwrap_or(0);
        nanos = nanos.saturating_add(digits * per / 10u128.pow(frac.len() as u32));
    }
    nanos
}

/// Go syntax, compacted: zero parts are left out (`5m` rather than Go's `5m0s`, `1h`
/// rather than `1h0m0s`), under a second in the largest unit that keeps it whole or
/// short (`500ms`, `1.5ms`, `250µs`). Zero is `0s`. Every output parses back exactly.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let nanos = d.as_nanos();
    if d < Duration::from_secs(1) {
        let (per, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        return with_fraction(nanos, per, unit);
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || d.subsec_nanos() > 0 {
        out += &with_fraction(
            u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
            1_000_000_000,
            "s",
        );
    }
    out
}

/// `value / per` with the fraction's trailing zeros removed, then `unit`.
fn with_fraction(value: u128, per: u128, unit: &str) -> String {
    let whole = value / per;
    let rem = value % per;
    if rem == 0 {
        return format!("{whole}{unit}");
    }
    let width = per.ilog10() as usize;
    let frac = format!("{rem:0width$}");
    format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
}

/// Serde glue: `#[serde(with = "duration")]`. Strings are Go durations; a plain `0` is
/// zero (whether zero is allowed is the key's rule, checked in validation); any other
/// number lacks a unit.
pub mod serde {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    use super::{format, parse, EXPECTED, UNITS};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
                parse(s).map_err(|why| E::custom(format!("{EXPECTED} expected, got `{s}`: {why}")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
                if n == 0 {
                    return Ok(Duration::ZERO);
                }
                Err(E::custom(format!(
                    "{EXPECTED} expected, got `{n}`: a unit is required (e.g. `{n}s` or \
                     `{n}ms`); valid units: {UNITS}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{EXPECTED} expected, got `{n}`: a duration cannot be negative"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{EXPECTED} expected, got `{n}`: a unit is required (e.g. `{n}s`); \
                     valid units: {UNITS}"
                )))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Duration, E> {
                Err(E::custom(format!("{EXPECTED} expected, got `{b}`")))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{EXPECTED} expected, got nothing (the key has no value)"
                )))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
                Err(serde::de::Error::custom(format!(
                    "{EXPECTED} expected, got a list"
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Duration, A::Error> {
                Err(serde::de::Error::custom(format!(
                    "{EXPECTED} expected, got a mapping"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn accepts_what_go_accepts() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("300ms", ms(300)),
            ("5s", ms(5_000)),
            ("5m", ms(300_000)),
            ("1h", ms(3_600_000)),
            ("1.5h", ms(5_400_000)),
            ("2h45m", ms(9_900_000)),
            (".5s", ms(500)),
            ("5.s", ms(5_000)),
            ("1h0m0s", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("+5s", ms(5_000)),
            ("1.5ms", Duration::from_micros(1_500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1h", ms(7_200_000)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("2562047h47m16.854775807s", MAX),
            ("  5s ", ms(5_000)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_or_means_otherwise() {
        for (text, why) in [
            ("5M", "`M` is not minutes"),
            ("1d", "no day unit; write 24h"),
            ("2w", "168h"),
            ("1y", "no year unit; write 8760h"),
            ("5 m", "no spaces"),
            ("1m 30s", "no spaces"),
            ("5sec", "write `s`"),
            ("5min", "write `m`"),
            ("2hours", "write `h`"),
            ("5S", "lower case"),
            ("30", "unit is required"),
            ("1.5", "unit is required"),
            ("-5s", "negative"),
            ("-0", "negative"),
            ("", "empty"),
            ("+", "after the sign"),
            (".s", "number expected"),
            ("s", "number expected"),
            ("5x", "unknown unit `x`"),
            ("2562047h47m16.854775808s", "too long"),
            ("99999999999999999999999999999999999999h", "too long"),
        ] {
            match parse(text) {
                Ok(d) => panic!("`{text}` parsed as {d:?}"),
                Err(e) => {
                    assert!(e.contains(why), "`{text}`: {e}");
                }
            }
        }
        // Every unknown-unit message lists the valid units.
        for text in ["5M", "1d", "5x", "5sec"] {
            assert!(parse(text).unwrap_err().contains(UNITS), "{text}");
        }
    }

    #[test]
    fn formats_in_go_syntax_and_round_trips() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (ms(500), "500ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_nanos(7), "7ns"),
            (ms(1_500), "1.5s"),
            (ms(60_000), "1m"),
            (ms(90_000), "1m30s"),
            (ms(300_000), "5m"),
            (ms(3_600_000), "1h"),
            (ms(5_400_000), "1h30m"),
            (ms(3_661_500), "1h1m1.5s"),
            (MAX, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(format(d), want);
            assert_eq!(parse(want), Ok(d), "{want}");
        }
    }
}
