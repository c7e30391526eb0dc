//! Medians over rounds, ratios and tables (terminal and markdown) for the benches' reports.

use std::fmt::Write as _;
use std::fs;

/// One measurement of one round: `None` when it was not run (a skipped peer), the error
/// when it failed.
pub type Measured = Option<Result<f64, String>>;

/// One metric of one proxy over the rounds in which it was measured.
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Rounds in which it was measured successfully, out of `total`.
    pub ok: usize,
    pub total: usize,
}

pub fn ok(v: &Measured) -> Option<f64> {
    match v {
        Some(Ok(x)) => Some(*x),
        _ => None,
    }
}

pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Median, min and max of a metric over the rounds that measured it (one value per round).
/// `None`: never measured (skipped); `Err`: failed in every round (the first round's error).
pub fn summarize(vals: &[&Measured]) -> Option<Result<Stat, String>> {
    let total = vals.iter().filter(|v| v.is_some()).count();
    if total == 0 {
        return None;
    }
    let mut oks: Vec<f64> = vals.iter().filter_map(|v| ok(v)).collect();
    if oks.is_empty() {
        let first = vals.iter().find_map(|v| match v {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        });
        return Some(Err(first.unwrap_or_default()));
    }
    oks.sort_by(f64::total_cmp);
    Some(Ok(Stat {
        median: median(&oks),
        min: oks[0],
        max: oks[oks.len() - 1],
        ok: oks.len(),
        total,
    }))
}

pub fn median_of(s: &Option<Result<Stat, String>>) -> Option<f64> {
    match s {
        Some(Ok(st)) => Some(st.median),
        _ => None,
    }
}

/// `median (min–max)`, or the single value for one round; `[k/n ok]` when some rounds failed.
pub fn cell(s: &Option<Result<Stat, String>>, decimals: usize) -> String {
    match s {
        Some(Ok(st)) => {
            let mut c = format!("{:.decimals$}", st.median);
            if st.ok > 1 {
                let _ = write!(c, " ({:.decimals$}–{:.decimals$})", st.min, st.max);
            }
            if st.ok < st.total {
                let _ = write!(c, " [{}/{} ok]", st.ok, st.total);
            }
            c
        }
        Some(Err(_)) => "failed".into(),
        None => "skipped".into(),
    }
}

pub fn raw_cell(v: &Measured, decimals: usize) -> String {
    match v {
        Some(Ok(x)) => format!("{x:.decimals$}"),
        Some(Err(_)) => "failed".into(),
        None => "skipped".into(),
    }
}

pub fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// An aligned plain-text table: the first column left-aligned, the rest right-aligned.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let pad = widths[c] - s.chars().count();
                if c == 0 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", line.join("  "));
        if i == 0 {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (cols - 1))
            );
        }
    }
}

/// A markdown table; the first `left` columns are left-aligned, the rest right-aligned.
pub fn markdown_table(md: &mut String, rows: &[Vec<String>], left: usize) {
    let _ = writeln!(md, "| {} |", rows[0].join(" | "));
    let _ = writeln!(
        md,
        "|{}|",
        rows[0]
            .iter()
            .enumerate()
            .map(|(i, _)| if i < left { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in &rows[1..] {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
}

/// The machine in one line: cores, CPU model, kernel.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), Linux {kernel}; loopback only; load generator, proxy and \
         upstreams share the cores"
    )
}
