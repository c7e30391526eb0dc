#!/usr/bin/env bash
# Runs the out-of-descriptors test (tests/emfile.rs: the binary under RLIMIT_NOFILE 64,
# 200 clients, all closed, 3 cycles each) N times in a row (default 20); stops at the
# first failure. Usage: scripts/emfile-repeat.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
cargo test --test emfile --no-run >/dev/null 2>&1
for i in $(seq 1 "$n"); do
  if ! cargo test -q --test emfile >/tmp/emfile-run.log 2>&1; then
    echo "run $i of $n FAILED"; tail -30 /tmp/emfile-run.log; exit 1
  fi
  echo "run $i of $n ok"
done
