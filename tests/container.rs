//! The container image as users run it: built with no registry (docker/build-local.sh on
//! this checkout's binary), run with `--network host` in front of an echo upstream on
//! loopback. Traffic byte-exact, `docker stop` drains, the HEALTHCHECK turns healthy, the
//! image runs as non-root on a read-only root without capabilities, and the data plane
//! each runtime setting gets (io_uring where seccomp allows it, epoll where it does not).
//!
//! Skipped with a message where no Docker daemon answers; under `CI=true` that fails.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::docker::{daemon, daemon_major, docker_ok, image, repo, Container, HostConfig};
use support::*;

/// Host networking: the proxy in the container reaches the test's upstream on loopback,
/// and the test reaches the proxy the same way, on ports picked free.
/// Containers of this file run one at a time: they all run as UID 65532, and the kernel
/// charges io_uring's locked memory per user, so one container's rings would count
/// against another's `--ulimit memlock=65536` (case (c)).
fn one_container_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(cfg: &HostConfig, opts: &[&str]) -> Container {
    let mount = cfg.mount();
    let mut all = vec!["--network", "host", "-v", &mount];
    all.extend_from_slice(opts);
    let c = Container::run(&all, image(), &[]);
    c.wait_ready(cfg.admin);
    c
}

/// Several sessions at once, small and large, each checked byte for byte.
fn traffic(addr: SocketAddr) {
    let sizes = [1usize, 4096, 256 * 1024, 4 << 20];
    let threads: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| std::thread::spawn(move || echo_round_trip(addr, n, 11 + i as u64)))
        .collect();
    for (t, n) in threads.into_iter().zip(sizes) {
        t.join()
            .expect("echo thread")
            .unwrap_or_else(|e| panic!("{n} bytes through the container: {e}"));
    }
}

/// Whether the kernel lets this (unprivileged, in-container) process set up io_uring at
/// all: `kernel.io_uring_disabled` 1 or 2 refuses it whatever seccomp says.
fn kernel_allows_io_uring() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|v| v.trim() == "0")
        .unwrap_or(true)
}

/// A data-plane case: the proxy with `opts` passes traffic byte-exact, and logs the data
/// plane `expect` when given.
fn data_plane_case(opts: &[&str], expect: Option<&str>) {
    if !daemon() {
        return;
    }
    let echo = Upstream::echo();
    let cfg = HostConfig::new(echo.addr, "10s");
    let c = run(&cfg, opts);
    traffic(cfg.listen);
    if let Some(plane) = expect {
        c.wait_log(&format!("data plane: {plane}"));
    }
}

#[test]
fn traffic_through_the_container_is_byte_exact() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let echo = Upstream::echo();
    let cfg = HostConfig::new(echo.addr, "10s");
    let _c = run(&cfg, &[]);
    traffic(cfg.listen);
    // Sequential sessions too: each one a new accept and dial (or a pooled connection).
    for seed in 0..20 {
        echo_round_trip(cfg.listen, 64 * 1024, 100 + seed).expect("sequential session");
    }
}

#[test]
fn docker_stop_drains_the_transfers_and_exits_zero() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let echo = Upstream::echo();
    let grace = Duration::from_secs(10);
    let cfg = HostConfig::new(echo.addr, "10s");
    let c = run(&cfg, &[]);
    // Each transfer takes 4 s (80 chunks, one per 50 ms): well past the 1 s drain delay,
    // so they are in flight when the listener closes, and well within the grace period.
    let transfers: Vec<_> = (0..6).map(|i| paced_transfer(cfg.listen, i, 80)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    // -t 30: past drain_delay + grace_period, so Docker's SIGKILL cannot be what ends it.
    docker_ok(&["stop", "-t", "30", &c.name]);
    let took = started.elapsed();
    for (i, t) in transfers.into_iter().enumerate() {
        let got = t.join().unwrap_or_else(|_| panic!("transfer {i} broke"));
        assert_eq!(got, 80 * 16 * 1024, "transfer {i}");
    }
    let logs = c.logs();
    assert_eq!(
        c.inspect("{{.State.ExitCode}}"),
        "0",
        "exit code after docker stop:\n{logs}"
    );
    assert!(
        took < Duration::from_secs(1) + grace,
        "docker stop took {took:?}, past drain_delay + grace_period:\n{logs}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "it stopped before the drain delay ({took:?}):\n{logs}"
    );
    assert!(logs.contains("draining"), "{logs}");
}

#[test]
fn the_healthcheck_turns_the_container_healthy() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let echo = Upstream::echo();
    let cfg = HostConfig::new(echo.addr, "10s");
    let c = run(
        &cfg,
        &["--health-interval", "1s", "--health-start-period", "1s"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c.inspect("{{.State.Health.Status}}");
        if status == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health status {status}: {}\n{}",
            c.inspect("{{json .State.Health}}"),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The probe's own line names what it asked.
    let log = c.inspect("{{json .State.Health.Log}}");
    assert!(
        log.contains(&format!("http://{}/healthz", cfg.admin)),
        "{log}"
    );
}

#[test]
fn the_image_runs_as_non_root_on_a_read_only_root_without_capabilities() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let echo = Upstream::echo();
    let cfg = HostConfig::new(echo.addr, "10s");
    let c = run(&cfg, &["--read-only", "--cap-drop", "ALL"]);
    assert_eq!(c.inspect("{{.Config.User}}"), "65532:65532");
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65532 65532 65532 65532", "{status}");
    assert_eq!(field("Gid:"), "65532 65532 65532 65532", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    traffic(cfg.listen);
}

/// (a) Docker's default seccomp profile: io_uring where the Engine's default allows it
/// (before Engine 25) and the kernel does; the epoll data plane otherwise.
#[test]
fn data_plane_under_dockers_default_profile() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let plane = if daemon_major() < 25 && kernel_allows_io_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    data_plane_case(&[], Some(plane));
}

/// (b) A profile that refuses io_uring_setup/enter/register with EPERM (the shipped
/// profile less those three): the proxy falls back to the epoll data plane.
#[test]
fn data_plane_falls_back_to_epoll_when_seccomp_refuses_io_uring() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("no-io-uring.json");
    std::fs::write(&profile, profile_without_io_uring()).expect("write profile");
    let opt = format!("seccomp={}", profile.display());
    data_plane_case(&["--security-opt", &opt], Some("epoll"));
}

/// (c) The image's user and a 64 KiB locked-memory limit: registered buffers are refused
/// (the proxy warns and sends from unregistered ones), traffic still passes.
#[test]
fn data_plane_as_uid_65532_with_64k_memlock() {
    let _one = one_container_at_a_time();
    data_plane_case(&["--user", "65532", "--ulimit", "memlock=65536"], None);
}

/// (d) No capability, read-only root file system.
#[test]
fn data_plane_without_capabilities_on_a_read_only_root() {
    let _one = one_container_at_a_time();
    data_plane_case(&["--cap-drop", "ALL", "--read-only"], None);
}

/// docker/seccomp.json is a profile Docker accepts, and under it the io_uring data plane
/// runs (where the kernel allows io_uring).
#[test]
fn the_shipped_seccomp_profile_runs_the_io_uring_data_plane() {
    let _one = one_container_at_a_time();
    if !daemon() {
        return;
    }
    let opt = format!("seccomp={}", repo().join("docker/seccomp.json").display());
    let plane = if kernel_allows_io_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    data_plane_case(&["--security-opt", &opt], Some(plane));
}

const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// docker/seccomp.json with io_uring_* taken out of every rule and refused with EPERM by
/// a rule of its own (the default action would refuse them too; the rule says so).
fn profile_without_io_uring() -> String {
    let text = std::fs::read_to_string(repo().join("docker/seccomp.json")).expect("profile");
    let mut p: serde_json::Value = serde_json::from_str(&text).expect("profile is JSON");
    let rules = p["syscalls"].as_array_mut().expect("syscalls");
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !IO_URING.contains(&n.as_str().unwrap_or_default()));
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    rules.push(serde_json::json!({
        "names": IO_URING,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": 1,
    }));
    serde_json::to_string_pretty(&p).expect("serialize")
}
