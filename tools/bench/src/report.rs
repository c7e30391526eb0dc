//! Medians over rounds, ratios and tables (terminal and markdown) for the benches' reports.

use std::fmt::Write as _;
use std::fs;

use crate::peers::Column;

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

/// A metric's summary in every column of `cols`: `rounds(name)` gives the proxy's values
/// over the rounds, `None` when that proxy did not run (not installed).
pub fn column_stats<'a>(
    cols: &[Column],
    rounds: impl Fn(&str) -> Option<Vec<&'a Measured>>,
) -> Vec<Option<Result<Stat, String>>> {
    cols.iter()
        .map(|c| rounds(c.name).and_then(|v| summarize(&v)))
        .collect()
}

/// The headers of a table's proxy columns: each column's name, then for each sssonector
/// variant its ratio to every peer and to the better peer (`sss ÷ haproxy`, ...).
pub fn lineup_headers(cols: &[Column]) -> Vec<String> {
    let mut h: Vec<String> = cols.iter().map(|c| c.name.to_string()).collect();
    let peers: Vec<&Column> = cols.iter().filter(|c| !c.kind.is_ours()).collect();
    for ours in cols.iter().filter(|c| c.kind.is_ours()) {
        h.extend(peers.iter().map(|p| format!("{} ÷ {}", ours.short, p.name)));
        h.push(format!("{} ÷ better peer", ours.short));
    }
    h
}

/// The median of the better peer (the highest, or the lowest when lower is better).
pub fn better_peer(
    cols: &[Column],
    stats: &[Option<Result<Stat, String>>],
    higher_is_better: bool,
) -> Option<f64> {
    cols.iter()
        .zip(stats)
        .filter(|(c, _)| !c.kind.is_ours())
        .filter_map(|(_, s)| median_of(s))
        .reduce(|a, b| if higher_is_better { a.max(b) } else { a.min(b) })
}

/// The cells under [`lineup_headers`]: each column's `median (min–max)`, then the ratios
/// of the medians (`-` for every ratio when `ratios` is false).
pub fn lineup_cells(
    cols: &[Column],
    stats: &[Option<Result<Stat, String>>],
    decimals: usize,
    higher_is_better: bool,
    ratios: bool,
) -> Vec<String> {
    let mut row: Vec<String> = stats.iter().map(|s| cell(s, decimals)).collect();
    let best = better_peer(cols, stats, higher_is_better);
    let peers: Vec<Option<f64>> = cols
        .iter()
        .zip(stats)
        .filter(|(c, _)| !c.kind.is_ours())
        .map(|(_, s)| median_of(s))
        .collect();
    for (_, s) in cols.iter().zip(stats).filter(|(c, _)| c.kind.is_ours()) {
        let ours = median_of(s);
        for &p in peers.iter().chain([&best]) {
            row.push(if ratios { ratio(ours, p) } else { "-".into() });
        }
    }
    row
}
