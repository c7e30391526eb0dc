//! Docker for the container tests: is a daemon there, the image built with no registry
//! (docker/build-local.sh on this test's binary), containers that are removed when the
//! test ends, and the proxy config a container runs on host networking.
//!
//! A test that needs Docker skips with a message when no daemon answers, and fails under
//! `CI=true` (where .ci/run installs and starts one), as [`super::have_tool`] does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The tag the tests build; one build per test binary.
pub const TEST_IMAGE: &str = "sssonector:test";

/// The longest one docker command may take: a hung daemon fails the test instead of
/// hanging it (the image build is the slow one: a few seconds, nothing is pulled).
const DOCKER_LIMIT: &str = "300";

/// The repository root (docker/, deploy/, monitoring/ are read from there).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (false, with a message) or, under `CI=true`, fails when `what` is missing.
pub fn require(found: bool, what: &str) -> bool {
    if !found {
        assert!(!under_ci(), "required under CI=true: {what}");
        eprintln!("skipping: {what}");
    }
    found
}

/// `docker ARGS` under a time limit; its output, whatever the exit code.
pub fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["--kill-after=5", DOCKER_LIMIT, "docker"])
        .args(args)
        .output()
        .expect("run docker (under timeout)")
}

/// `docker ARGS`, which must succeed; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a Docker daemon answers (the CLI is installed and `docker version` reaches the
/// server). Skips or fails under CI as [`require`] says.
pub fn daemon() -> bool {
    if !require(
        super::find_tool("docker").is_some(),
        "docker (docker.io) is not installed",
    ) {
        return false;
    }
    let out = docker(&["version", "--format", "{{.Server.Version}}"]);
    require(
        out.status.success(),
        &format!(
            "no Docker daemon answers (start dockerd): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    )
}

/// The daemon's major version (Docker Engine 25 removed io_uring from its default
/// seccomp profile).
pub fn daemon_major() -> u32 {
    let v = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server version {v:?}"))
}

/// Builds [`TEST_IMAGE`] once per test binary, with docker/build-local.sh on the binary
/// under test: no registry, the layout of the shipped image, the code of this checkout.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    BUILT.get_or_init(|| {
        let out = Command::new(repo().join("docker/build-local.sh"))
            .args(["-t", TEST_IMAGE, env!("CARGO_BIN_EXE_sssonector")])
            .output()
            .expect("run docker/build-local.sh");
        assert!(
            out.status.success(),
            "docker/build-local.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    TEST_IMAGE
}

/// A running container, removed (`docker rm -f`) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name N OPTS IMAGE ARGS`.
    pub fn run(opts: &[&str], image: &str, args: &[&str]) -> Container {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sssonector-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut all = vec!["run", "-d", "--name", &name, "--label", "sssonector-test=1"];
        all.extend_from_slice(opts);
        all.push(image);
        all.extend_from_slice(args);
        docker_ok(&all);
        Container { name }
    }

    /// Everything the container wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Waits (up to 30 s) until `/readyz` at `admin` answers 200; fails with the logs if
    /// the container exits or never gets ready.
    pub fn wait_ready(&self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(super::http_get(admin, "/readyz"), Ok((200, _))) {
                return;
            }
            assert!(
                self.running(),
                "the container exited ({}):\n{}",
                self.inspect("{{.State.ExitCode}}"),
                self.logs()
            );
            assert!(
                Instant::now() < deadline,
                "http://{admin}/readyz never answered 200:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log has a line containing `marker` (up to 20 s); returns the log.
    pub fn wait_log(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.logs();
            if logs.contains(marker) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no `{marker}` in the container's log:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// Addresses of a proxy run in a container on host networking.
pub struct HostConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostConfig {
    /// One listener on a free loopback port in front of `upstream`, the admin server on
    /// another, one worker, a small buffer pool, a 1 s drain delay and `grace_period`.
    pub fn new(upstream: SocketAddr, grace_period: &str) -> HostConfig {
        // Both bound at once, so the two free ports differ; released for the container.
        let (a, b) = (bind_free(), bind_free());
        let (listen, admin) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        drop((a, b));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        let yaml = format!(
            "listeners:\n  - name: app\n    listen: {listen}\n    upstreams: [{upstream}]\n\
             workers: 1\n\
             connection:\n  buffer:\n    size: 16384\n    max_pool_size: 64\n\
             \x20 monitoring:\n    listen: {admin}\n\
             shutdown:\n  drain_delay: 1s\n  grace_period: {grace_period}\n"
        );
        std::fs::write(&file, yaml).expect("write config");
        // The container runs as UID 65532: it must be able to read the file.
        set_mode(&file, 0o644);
        HostConfig {
            listen,
            admin,
            file,
            _dir: dir,
        }
    }

    /// `-v FILE:/etc/sssonector/config.yaml:ro`: the image's own config path, so its
    /// HEALTHCHECK reads this admin address.
    pub fn mount(&self) -> String {
        format!("{}:/etc/sssonector/config.yaml:ro", self.file.display())
    }
}

fn bind_free() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port")
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
