#!/usr/bin/env bash
# Soak (issue 12): the release binary under 10 minutes (or MINUTES) of mixed churn,
# request/response and bulk load, with a fault injected every FAULT_EVERY seconds
# (default 5): upstream killed and restarted, client reset mid-bulk, a client that never
# reads, half-close then silence, one byte per 200 ms. Prints RSS, fds, sessions, slots in
# use and idle pool each minute; exits 1 on a corrupted byte or anything left over.
# The driver is examples/soak.rs. Usage: scripts/soak.sh [MINUTES] [FAULT_EVERY]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
every=${2:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build -q --release --bin sssonector --example soak
exec "$target/release/examples/soak" "$target/release/sssonector" "$minutes" "$every"
