//! Side by side: sssonector (1 worker), HAProxy (`mode tcp`, `nbthread 1`) and nginx (`stream`, `worker_processes 1`), each a separate process in front of the same built-in upstreams on loopback.
//!
//! `cargo bench --bench compare` (full: 3 rounds) or `cargo bench --bench compare -- --quick`
//! (1 round); `-- --rounds N` sets the number of rounds.
//! Measures, on a fresh proxy process per measurement:
//! - bulk throughput of one stream, upload (to a sink) and download (from a source), MiB/s;
//! - 64-byte request/response over 50 connections for a fixed time: requests/s, latency, and
//!   the proxy's CPU time (utime+stime of its processes, from /proc/PID/stat) per request;
//! - RSS per idle session: proxy VmRSS (summed over its processes) after opening 4000
//!   established sessions, minus before, divided by 4000.
//!
//! Each round runs every measurement on every proxy, the proxies interleaved per measurement
//! and their order rotated by one each round, so drift of a shared machine hits all of them.
//! The report gives, per metric and proxy, the median across rounds with the min–max spread,
//! and ratios (sssonector ÷ peer) of the medians.
//!
//! Prints a table with ratios and writes it as markdown to `<target dir>/bench-compare.md`
//! (with every round's raw values). A missing peer binary is skipped with a message (a
//! failure when `CI=true`); a proxy that fails to start or to carry the load is reported as
//! `failed: ...` for that measurement.
//! Every child runs in its own process group, killed on drop, on panic and on Ctrl-C.
//!
//! Here: [`cli`] (arguments, modes), [`measure`] (upstreams, measurements, rounds) and
//! [`report`] (metrics, table, markdown). The harness every bench shares (the proxies and
//! their variants, child processes, /proc, tables) is the `sssonector-bench` crate
//! (`tools/bench`); the load and the upstreams are `sssonector-loadgen` (`tools/loadgen`).

mod cli;
mod measure;
mod report;

use std::fs;
use std::path::Path;
use std::time::Instant;

use sssonector_bench::peers::{setup, Setup};
use sssonector_bench::processes::clock_ticks_per_sec;
use sssonector_bench::report::{machine, print_table};

use cli::parse_args;
use measure::{run_rounds, Bench, Upstreams};
use report::{markdown, mode_line, table, METRICS, RATIO_NOTE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let params = match parse_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-compare: {e}");
            std::process::exit(2);
        }
    };
    let Setup {
        ci,
        target_dir,
        work,
        proxies,
    } = setup(
        "bench-compare",
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        Path::new(env!("CARGO_BIN_EXE_sssonector")),
    );
    let hz = clock_ticks_per_sec();

    let upstreams = match Upstreams::start() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("bench-compare: cannot start upstreams: {e}");
            std::process::exit(1);
        }
    };

    eprintln!("bench-compare: {}", mode_line(&params));
    let started = Instant::now();
    let bench = Bench {
        dir: &work,
        up: &upstreams,
        params: &params,
        hz,
    };
    let results = run_rounds(&proxies, &bench);
    let elapsed = started.elapsed();
    eprintln!("bench-compare: done in {:.0} s", elapsed.as_secs_f64());

    let rows = table(&results);
    println!();
    println!("{}", mode_line(&params));
    println!("Machine: {}", machine());
    for p in &proxies {
        println!("  {}: {}", p.name, p.version);
    }
    println!();
    print_table(&rows);
    println!("\n{RATIO_NOTE}");
    let md = markdown(&rows, &results, &params, elapsed);
    let out = target_dir.join("bench-compare.md");
    match fs::write(&out, md) {
        Ok(()) => println!("written to {}", out.display()),
        Err(e) => eprintln!("bench-compare: cannot write {}: {e}", out.display()),
    }
    // A peer that failed its measurements is a harness problem CI should see; sssonector's
    // failures are reported but do not fail the run while its data plane is unfinished.
    let peer_failed = results.iter().any(|pr| {
        !pr.proxy.kind.is_ours()
            && pr
                .rounds
                .iter()
                .any(|r| METRICS.iter().any(|m| matches!((m.get)(r), Some(Err(_)))))
    });
    if ci && peer_failed {
        eprintln!("bench-compare: CI=true and a peer measurement failed");
        std::process::exit(1);
    }
}
