//! A stable-toolchain mutation fuzzer for the config loader (`Config::parse` on YAML
//! text) and the admin HTTP request parser (`admin::http::parse_head`): seeds (the
//! shipped configs, a few requests) mutated at random, and neither may panic. The
//! `cargo fuzz` targets in `fuzz/` run the same two entry points under libFuzzer.
//!
//! Budget: `SSSONECTOR_FUZZ_SECS` seconds per parser (default 2, as CI runs it);
//! `SSSONECTOR_FUZZ_SEED` repeats a run (each run prints its seed). `scripts/fuzz.sh
//! SECONDS` runs it with a large budget when cargo-fuzz is not installed. An input that
//! panics is written to the temp directory and named in the failure; it becomes a case
//! in `regressions` below.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Fragments that mean something to YAML, to the config's values and to HTTP.
const DICT: &[&str] = &[
    ":",
    "\n",
    " ",
    "  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "&a",
    "*a",
    "!!str",
    "#",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "1e309",
    "18446744073709551616",
    "4294967296",
    "9223372036854775807",
    "0ms",
    "1ns",
    "99999999999h",
    "1.5s",
    "auto",
    "127.0.0.1:0",
    "[::1]:80",
    ":65535",
    "host:",
    "\t",
    "\r\n",
    "\r\n\r\n",
    "\n\n",
    "GET",
    "HEAD",
    " / ",
    "HTTP/1.1",
    "HTTP/1.0",
    "?",
    "\u{0}",
    "\u{7f}",
    "é",
    "workers: ",
    "listeners:",
    "connection:",
    "upstreams: ",
    "listen: ",
    "pool:",
    "buffer:",
    "monitoring:",
    "<<: *a",
];

fn mutate(rng: &mut SmallRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..rng.gen_range(1..6) {
        let len = input.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
        match rng.gen_range(0..7) {
            0 if len > 0 => input[at.min(len - 1)] = rng.gen(),
            1 => {
                let word = DICT[rng.gen_range(0..DICT.len())].as_bytes();
                input.splice(at..at, word.iter().copied());
            }
            2 if len > 0 => {
                let end = (at + rng.gen_range(1..32)).min(len);
                input.drain(at.min(end)..end);
            }
            3 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = (start + rng.gen_range(1..64)).min(len);
                let piece = input[start..end].to_vec();
                input.splice(at..at, piece);
            }
            4 => {
                // A line of another seed.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let lines: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                let line = lines[rng.gen_range(0..lines.len())];
                let mut piece = line.to_vec();
                piece.push(b'\n');
                input.splice(at..at, piece);
            }
            5 => {
                // A digit run replaced by an extreme number.
                if let Some(p) = input.iter().skip(at).position(u8::is_ascii_digit) {
                    let p = at + p;
                    let q = input[p..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(input.len(), |q| p + q);
                    let n = [
                        "0",
                        "1",
                        "65536",
                        "4294967297",
                        "18446744073709551615",
                        "99999999999999999999999",
                    ][rng.gen_range(0..6)];
                    input.splice(p..q, n.bytes());
                }
            }
            _ if len > 1 => {
                // Indentation shifted: a line starts with more or fewer spaces.
                if let Some(nl) = input.iter().skip(at).position(|b| *b == b'\n') {
                    input.insert(at + nl + 1, b' ');
                }
            }
            _ => input.push(rng.gen()),
        }
    }
    input.truncate(64 * 1024);
}

fn budget() -> Duration {
    let secs = std::env::var("SSSONECTOR_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Runs `target` on mutated seeds for the budget; a panic names the input's file.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let seed = std::env::var("SSSONECTOR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = SmallRng::seed_from_u64(seed);
    let (started, budget) = (Instant::now(), budget());
    let mut runs = 0u64;
    let mut corpus = seeds.clone();
    // Panics are caught below; keep the default hook from printing each one twice.
    while started.elapsed() < budget {
        let mut input = corpus[rng.gen_range(0..corpus.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        let result = std::panic::catch_unwind(|| target(&input));
        runs += 1;
        if result.is_err() {
            let path = std::env::temp_dir().join(format!("sssonector-fuzz-{name}-{seed}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: panicked on the input in {} (seed {seed}, run {runs}):\n{:?}",
                path.display(),
                String::from_utf8_lossy(&input)
            );
        }
        // Keep some mutants as new starting points, so changes pile up.
        if runs % 8 == 0 && corpus.len() < 4096 {
            corpus.push(input);
        }
    }
    eprintln!(
        "{name}: {runs} inputs in {:?}, seed {seed}, no panic",
        started.elapsed()
    );
}

fn config_target(input: &[u8]) {
    let _ = sssonector::Config::parse(&String::from_utf8_lossy(input));
}

fn http_target(input: &[u8]) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    if let Some(Err(e)) = sssonector::admin::http::parse_head(input, peer) {
        let _ = (e.status(), e.to_string());
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("configs/")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    seeds.push(b"listeners:\n  - listen: 127.0.0.1:0\n    upstreams: [127.0.0.1:1]\n".to_vec());
    seeds.sort();
    seeds
}

fn http_seeds() -> Vec<Vec<u8>> {
    [
        "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
        "HEAD /healthz HTTP/1.0\r\n\r\n",
        "GET /status?x=1&y HTTP/1.1\nHost: b\n\n",
        "POST /drain HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

#[test]
fn the_config_loader_never_panics() {
    fuzz("config", config_seeds(), config_target);
}

#[test]
fn the_admin_request_parser_never_panics() {
    fuzz("admin-http", http_seeds(), http_target);
}

/// Inputs that once panicked (none found so far) and the edges the fuzzer is seeded
/// with: each must be answered with a value or an error.
#[test]
fn regressions() {
    for input in [
        &b""[..],
        b"\r\n\r\n",
        b"\n\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b":\n\n",
    ] {
        http_target(input);
    }
    for input in ["", "~", "[]", "listeners:", "workers: 18446744073709551616"] {
        config_target(input.as_bytes());
    }
}
