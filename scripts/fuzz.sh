#!/usr/bin/env bash
# Fuzzes the config loader (Config::parse) and the admin HTTP request parser
# (admin::http::parse_head) for SECONDS each (default 60). With nightly and cargo-fuzz
# (`cargo install cargo-fuzz`) it runs the libFuzzer targets in fuzz/, seeded with
# configs/ and a few requests; crashes land in fuzz/artifacts/<target>/. Without them it
# runs the stable mutation fuzzer (tests/fuzz_parsers.rs) with the same budget.
# Either way, an input that panics becomes a case in tests/fuzz_parsers.rs `regressions`.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
if cargo fuzz --version >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/fuzz
  mkdir -p fuzz/corpus/config_parse fuzz/corpus/admin_http_parse
  cp configs/*.yaml fuzz/corpus/config_parse/
  printf 'GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n' > fuzz/corpus/admin_http_parse/get
  printf 'HEAD /healthz HTTP/1.0\n\n' > fuzz/corpus/admin_http_parse/head
  for t in config_parse admin_http_parse; do
    echo "== cargo fuzz: $t for ${secs}s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -max_len=65536 2>&1 |
      grep -E '^(#[0-9]+ *DONE|Done|==[0-9]+==|SUMMARY|.*panicked|.*Test unit written)' || true
    [ -z "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ] || { echo "$t: crash in fuzz/artifacts/$t"; exit 1; }
  done
else
  echo "cargo-fuzz or nightly missing: the stable mutation fuzzer, ${secs}s per parser"
  SSSONECTOR_FUZZ_SECS=$secs cargo test -q --test fuzz_parsers -- --nocapture
fi
