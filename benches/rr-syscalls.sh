#!/usr/bin/env bash
# System calls and CPU per 64-byte request for sssonector (1 worker), HAProxy
# (nbthread 1) and nginx (stream, 1 worker), one after another in front of the same
# echo upstream under the compare bench's request/response load (50 connections). The
# "system calls per request" figures in docs/benchmarks.md come from this. ~40 s.
# Needs: perf (apt-get install linux-perf), haproxy and nginx for their rows.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -q --bin sssonector --example rr_load
load=target/release/examples/rr_load
work=$(mktemp -d)
proxy_port=${PROXY_PORT:-25210}
load_secs=10 window_secs=8
hz=$(getconf CLK_TCK)

# The upstream serves until its stdin closes: the fd 3 we hold.
mkfifo "$work/up.in"
"$load" upstream < "$work/up.in" > "$work/up.addr" & upstream=$!
exec 3> "$work/up.in"
trap 'exec 3>&-; kill $upstream 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$work/up.addr" ] && break; sleep 0.1; done
up=$(cat "$work/up.addr")

cpu_ticks() { # pids... -> utime+stime summed
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

measure() { # label, command...
  local label=$1; shift
  setsid "$@" >"$work/proxy.out" 2>&1 & local pid=$!
  for _ in $(seq 50); do
    ss -ltn "sport = :$proxy_port" | grep -q LISTEN && break; sleep 0.1
  done
  local pids; pids=$(pgrep -g "$pid" | paste -sd,)
  "$load" drive "127.0.0.1:$proxy_port" "$load_secs" > "$work/drive.out" & local drive=$!
  sleep 1
  local c0; c0=$(cpu_ticks ${pids//,/ })
  perf stat -x, -o "$work/perf.csv" -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter \
    -p "$pids" -- sleep "$window_secs" 2>/dev/null
  local c1; c1=$(cpu_ticks ${pids//,/ })
  wait "$drive"
  kill -- "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  python3 - "$label" "$work/drive.out" "$work/perf.csv" "$((c1 - c0))" "$hz" "$window_secs" <<'PY'
import sys
label, drive, csv, ticks, hz, window = sys.argv[1:]
words = open(drive).read().split()
rate = int(words[1]) / float(words[3])
counts = {}
for line in open(csv):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        counts[f[2]] = int(f[0])
reqs = rate * float(window)
calls = counts.get("raw_syscalls:sys_enter", 0)
enters = counts.get("syscalls:sys_enter_io_uring_enter", 0)
print(f"{label:24} {rate:9.0f} req/s  {calls / reqs:6.3f} syscalls/req"
      f"  ({enters / reqs:.3f} io_uring_enter)"
      f"  {int(ticks) / int(hz) * 1e6 / reqs:6.2f} CPU us/req")
PY
}

measure "sssonector (1 worker)" target/release/sssonector --workers 1 \
  --listen "127.0.0.1:$proxy_port" --upstream "$up" --admin-listen 127.0.0.1:0
if command -v haproxy >/dev/null; then
  cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
listen rr
  bind 127.0.0.1:$proxy_port
  server s $up
CFG
  measure "haproxy (nbthread 1)" haproxy -f "$work/haproxy.cfg" -db
fi
if command -v nginx >/dev/null; then
  module=/usr/lib/nginx/modules/ngx_stream_module.so
  { [ -e "$module" ] && echo "load_module $module;"
    cat <<CFG
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:$proxy_port; proxy_pass $up; } }
CFG
  } > "$work/nginx.conf"
  measure "nginx (1 worker)" nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" -g "daemon off;"
fi
