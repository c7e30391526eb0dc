#!/usr/bin/env python3
"""RSS per idle session of an sssonector build: 4000 clients connect through one worker
to a local upstream that accepts and never writes, and the proxy's VmRSS before and
1.5 s after (past the send-timeout sweep) is divided by 4000. Unlike the compare bench's
idle measurement, the sessions exchange no byte, and the reading waits for the sweep.

    python3 benches/idle-rss.py target/release/sssonector            # this build
    python3 benches/idle-rss.py /path/to/old/sssonector --legacy     # a build before --admin-listen
    SSSONECTOR_DATA_PLANE=epoll python3 benches/idle-rss.py target/release/sssonector

It prints the proxy's whole RSS before and after too: on io_uring the registered buffer
region is resident from the start, on epoll a slot's page only once data lands in it.
"""
import resource
import socket
import subprocess
import sys
import tempfile
import time

SESSIONS = 4000


def main():
    binary = sys.argv[1]
    legacy = "--legacy" in sys.argv[2:]
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    upstream = socket.socket()
    upstream.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(8192)
    upstream.setblocking(False)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(
        "workers: 1\nlisteners:\n  - name: a\n"
        f"    listen: 127.0.0.1:{port}\n"
        f"    upstreams: ['127.0.0.1:{upstream.getsockname()[1]}']\n"
        "connection:\n  pool:\n    max_active: 9000\n"
    )
    config.close()
    args = [binary, "--config", config.name]
    if not legacy:
        args += ["--admin-listen", "127.0.0.1:0"]
    proxy = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    accepted = []

    def drain():
        while True:
            try:
                accepted.append(upstream.accept()[0])
            except BlockingIOError:
                return

    def rss_kib():
        with open(f"/proc/{proxy.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    try:
        time.sleep(1.5)
        drain()
        before = rss_kib()
        clients = []
        for i in range(SESSIONS):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            if i % 200 == 0:
                drain()
        time.sleep(1.5)
        drain()
        after = rss_kib()
        print(f"{binary}: {(after - before) * 1024 / SESSIONS:.0f} B per idle session "
              f"({SESSIONS} sessions, {len(accepted)} upstream connections); "
              f"RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")
    finally:
        proxy.kill()


if __name__ == "__main__":
    main()
