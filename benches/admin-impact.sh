#!/usr/bin/env bash
# Does the admin server cost the data plane anything? One iperf3 stream through
# sssonector (1 worker), each way, three times: alone; while /metrics and / are scraped
# 20 times a second; while 8 clients throw malformed, oversized and half-open requests at
# the admin port. Loopback only, ~30 s. Numbers are for the record (docs/operations.md),
# not a pass/fail check.
# Needs: iperf3 (apt-get install iperf3), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v iperf3 >/dev/null || { echo "iperf3 is not installed (apt-get install iperf3)" >&2; exit 1; }
cargo build --release -q
bin=${CARGO_TARGET_DIR:-target}/release/sssonector
work=$(mktemp -d)
up_port=${UP_PORT:-25211} proxy_port=${PROXY_PORT:-25210} admin_port=${ADMIN_PORT:-25212}
iperf3 -s -p "$up_port" >/dev/null 2>&1 & server=$!
cat > "$work/proxy.yaml" <<YAML
listeners:
  - name: bulk
    listen: 127.0.0.1:$proxy_port
    upstreams: [127.0.0.1:$up_port]
workers: 1
connection:
  pool:
    # iperf3's server takes its first connection as the control channel (see
    # benches/iperf-relay.sh): no warm connections.
    enabled: false
  monitoring:
    metrics_interval: 1s
    listen: 127.0.0.1:$admin_port
shutdown:
  drain_delay: 0s
YAML
"$bin" --config "$work/proxy.yaml" 2>"$work/proxy.log" & proxy=$!
load=
trap 'kill $server $proxy $load 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5

mib() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8/2**20))'; }

# Admin load generators, in Python so that no extra tool is needed.
cat > "$work/scrape.py" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
while True:
    for path in ("/metrics", "/"):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while s.recv(65536):
            pass
        s.close()
    time.sleep(0.1)
PY
cat > "$work/garbage.py" <<'PY'
import os, socket, sys, threading
port = int(sys.argv[1])
kinds = [os.urandom(300) + b"\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
         b"GET /metrics HTTP/1.1\r\nHost:", b"BREW / HTTP/1.1\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"]
def run():
    i = 0
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(kinds[i % len(kinds)])
            if i % len(kinds) == 2:
                s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            s.close()
        except OSError:
            pass
        i += 1
for _ in range(8):
    threading.Thread(target=run, daemon=True).start()
threading.Event().wait()
PY

measure() { # label
  local up down
  up=$(iperf3 -c 127.0.0.1 -p "$proxy_port" -t 3 -J | mib)
  down=$(iperf3 -c 127.0.0.1 -p "$proxy_port" -t 3 -R -J | mib)
  echo "$1  up $up MiB/s  down $down MiB/s"
}

measure "admin idle            "
python3 "$work/scrape.py" "$admin_port" & load=$!
measure "scrapes, 20/s          "
kill $load; wait $load 2>/dev/null || true
python3 "$work/garbage.py" "$admin_port" & load=$!
measure "garbage, 8 clients     "
kill $load; wait $load 2>/dev/null || true
load=
code=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$admin_port/healthz', timeout=10).status)")
echo "/healthz after the storm: $code"
