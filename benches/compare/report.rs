//! The compare bench's report: its metrics, the table of medians and ratios, and the markdown file.

use std::fmt::Write as _;
use std::time::Duration;

use sssonector_bench::peers::columns;
use sssonector_bench::report::{
    column_stats, lineup_cells, lineup_headers, machine, markdown_table, raw_cell, Measured,
};
use sssonector_loadgen::{
    BENCH_IDLE_SESSIONS as IDLE_SESSIONS, BENCH_RR_CONNECTIONS as RR_CONNECTIONS,
    BENCH_RR_PAYLOAD as RR_PAYLOAD,
};

use crate::cli::{Params, MIB};
use crate::measure::{ProxyResults, Results};

pub struct Metric {
    label: &'static str,
    higher_is_better: bool,
    decimals: usize,
    pub get: fn(&Results) -> &Measured,
}

pub const METRICS: &[Metric] = &[
    Metric {
        label: "bulk upload, 1 stream (MiB/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.bulk_up,
    },
    Metric {
        label: "bulk download, 1 stream (MiB/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.bulk_down,
    },
    Metric {
        label: "64 B req/resp, 50 conns (req/s)",
        higher_is_better: true,
        decimals: 0,
        get: |r| &r.rr_rps,
    },
    Metric {
        label: "req/resp latency p50 (µs)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rr_p50_us,
    },
    Metric {
        label: "req/resp latency p99 (µs)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rr_p99_us,
    },
    Metric {
        label: "proxy CPU per request (µs)",
        higher_is_better: false,
        decimals: 2,
        get: |r| &r.cpu_us_per_req,
    },
    Metric {
        label: "RSS per idle session (bytes, 4000 sessions)",
        higher_is_better: false,
        decimals: 0,
        get: |r| &r.rss_per_session,
    },
];

/// Rows of cells: header first. Each proxy's cell is its median over the rounds with the
/// min–max spread; ratios are sssonector ÷ peer of the medians (read with the metric's
/// direction: above 1 is better for throughput, worse for latency, CPU and memory). A
/// proxy that is not installed has its column, `skipped`.
pub fn table(results: &[ProxyResults]) -> Vec<Vec<String>> {
    let cols = columns();
    let mut header = vec!["metric".to_string(), "better".to_string()];
    header.extend(lineup_headers(&cols));
    let mut rows = vec![header];
    for m in METRICS {
        let stats = column_stats(&cols, |name| {
            let r = results.iter().find(|r| r.proxy.name == name)?;
            Some(r.rounds.iter().map(|r| (m.get)(r)).collect())
        });
        let mut row = vec![
            m.label.to_string(),
            if m.higher_is_better {
                "higher"
            } else {
                "lower"
            }
            .into(),
        ];
        row.extend(lineup_cells(
            &cols,
            &stats,
            m.decimals,
            m.higher_is_better,
            true,
        ));
        rows.push(row);
    }
    rows
}

/// Every round's raw value: one row per metric and proxy, one column per round.
fn per_round_table(results: &[ProxyResults], rounds: usize) -> Vec<Vec<String>> {
    let mut header = vec!["metric".to_string(), "proxy".to_string()];
    header.extend((1..=rounds).map(|r| format!("round {r}")));
    let mut rows = vec![header];
    for m in METRICS {
        for r in results {
            let mut row = vec![m.label.to_string(), r.proxy.name.to_string()];
            row.extend(r.rounds.iter().map(|r| raw_cell((m.get)(r), m.decimals)));
            rows.push(row);
        }
    }
    rows
}

pub fn mode_line(params: &Params) -> String {
    format!(
        "Mode: {}, {} round{} (every measurement on every proxy in each round, proxies \
         interleaved, order rotated each round); bulk {} MiB per stream; request/response \
         {RR_PAYLOAD} B over {RR_CONNECTIONS} connections for {:?}; {IDLE_SESSIONS} idle \
         sessions.",
        if params.quick { "quick" } else { "full" },
        params.rounds,
        if params.rounds == 1 { "" } else { "s" },
        params.bulk_bytes / MIB,
        params.rr_duration
    )
}

pub const RATIO_NOTE: &str = "Cells are the median across rounds (min–max in parentheses). \
    Ratios are sssonector ÷ peer of the medians: above 1 is better for throughput and \
    requests/s, worse for latency, CPU and memory.";

pub fn markdown(
    rows: &[Vec<String>],
    results: &[ProxyResults],
    params: &Params,
    elapsed: Duration,
) -> String {
    let mut md = String::from("# sssonector vs HAProxy vs nginx\n\n");
    let _ = writeln!(md, "{}\n", mode_line(params));
    let _ = writeln!(md, "Machine: {}\n", machine());
    let _ = writeln!(md, "Run time: {:.0} s.\n", elapsed.as_secs_f64());
    for r in results {
        let _ = writeln!(md, "- {}: {}", r.proxy.name, r.proxy.version);
    }
    md.push('\n');
    markdown_table(&mut md, rows, 2);
    let _ = writeln!(md, "\n{RATIO_NOTE}");
    if params.rounds > 1 {
        md.push_str("\n## Per round\n\n");
        markdown_table(&mut md, &per_round_table(results, params.rounds), 2);
    }
    let mut failures = String::new();
    for pr in results {
        for (round, r) in pr.rounds.iter().enumerate() {
            for m in METRICS {
                if let Some(Err(e)) = (m.get)(r) {
                    let _ = writeln!(
                        failures,
                        "- round {} / {} / {}: failed: {e}",
                        round + 1,
                        pr.proxy.name,
                        m.label
                    );
                }
            }
        }
    }
    if !failures.is_empty() {
        md.push_str("\n## Failures\n\n");
        md.push_str(&failures);
    }
    md
}
