#!/usr/bin/env python3
"""What io_uring charges to RLIMIT_MEMLOCK for a ring of N submission entries (and 4N
completion entries, as the workers set up), measured: the smallest limit under which
io_uring_setup succeeds, for a user without CAP_IPC_LOCK. Needs root (prlimit, setpriv)
and runs each try as a scratch user of its own, since the kernel charges per user.
The model in src/driver/select.rs (`charged_per_worker`) is held to these figures by its
test `the_charge_matches_what_the_kernel_refused`.

    sudo python3 benches/memlock-charge.py
"""
import ctypes
import os
import subprocess
import sys

SETUP_CQSIZE, SUBMIT_ALL, SINGLE_ISSUER, DEFER_TASKRUN = 1 << 3, 1 << 7, 1 << 12, 1 << 13
SYS_IO_URING_SETUP = 425


def try_setup(entries):
    """In the child: set up one ring the way a worker does; exit 0 if it worked."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = (ctypes.c_uint32 * 30)()
    params[1] = entries * 4
    params[2] = SETUP_CQSIZE | SUBMIT_ALL | SINGLE_ISSUER | DEFER_TASKRUN
    fd = libc.syscall(SYS_IO_URING_SETUP, entries, params)
    sys.exit(0 if fd >= 0 else 1)


def fits(entries, limit, uid):
    cmd = ["prlimit", f"--memlock={limit}:{limit}", "setpriv", f"--reuid={uid}",
           f"--regid={uid}", "--clear-groups", "--inh-caps=-all", sys.executable,
           os.path.abspath(__file__), "--child", str(entries)]
    return subprocess.run(cmd).returncode == 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        try_setup(int(sys.argv[2]))
    uid = 47000
    for entries in [8, 64, 128, 256, 512, 1024, 4096]:
        limit = 4096
        while limit < (1 << 22):
            uid += 1
            if fits(entries, limit, uid):
                break
            limit += 4096
        print(f"{entries:5} entries: {limit // 1024} KiB")


if __name__ == "__main__":
    main()
