#!/usr/bin/env bash
# One-stream bulk through sssonector (1 worker) for several buffer.max_in_flight values,
# and through HAProxy (nbthread 1), with iperf3 as load and upstream; the table in
# docs/design.md ("Gathering instead") comes from this. Loopback only, ~30 s.
# Needs: iperf3 (apt-get install iperf3), haproxy for the comparison row.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v iperf3 >/dev/null || { echo "iperf3 is not installed (apt-get install iperf3)" >&2; exit 1; }
cargo build --release -q
work=$(mktemp -d)
up_port=${UP_PORT:-25201} proxy_port=${PROXY_PORT:-25200}
iperf3 -s -p "$up_port" >/dev/null 2>&1 & server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.3

mib() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8/2**20))'; }

measure() { # label, command...
  local label=$1; shift
  "$@" >/dev/null 2>&1 & local pid=$!
  sleep 0.5
  local up down
  up=$(iperf3 -c 127.0.0.1 -p "$proxy_port" -t 3 -J | mib)
  down=$(iperf3 -c 127.0.0.1 -p "$proxy_port" -t 3 -R -J | mib)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$label  up $up MiB/s  down $down MiB/s"
}

for cap in 1 2 4 8; do
  cat > "$work/cap$cap.yaml" <<YAML
listeners:
  - name: bulk
    listen: 127.0.0.1:$proxy_port
    upstreams: [127.0.0.1:$up_port]
workers: 1
connection:
  pool:
    # iperf3's server takes its first connection as the test's control channel: warm
    # connections made before the client would become that. HAProxy does not pool either.
    enabled: false
  buffer:
    max_in_flight: $cap
  monitoring:
    listen: 127.0.0.1:0    # 9090 may be taken on this host
shutdown:
  drain_delay: 0s          # stopped with SIGTERM between runs
YAML
  measure "sssonector max_in_flight=$cap" target/release/sssonector --config "$work/cap$cap.yaml"
done
if command -v haproxy >/dev/null; then
  cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
listen bulk
  bind 127.0.0.1:$proxy_port
  server s 127.0.0.1:$up_port
CFG
  measure "haproxy (nbthread 1)" haproxy -f "$work/haproxy.cfg" -db
fi
