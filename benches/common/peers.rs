//! The proxies the benches compare (sssonector, HAProxy, nginx): finding them, writing
//! their configs and running each as a child process that cannot outlive the bench.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// File descriptors the bench process and its children may need: 4000 client sockets plus
/// 4000 accepted upstream sockets here, and 8000 in the proxy.
pub const NOFILE: u64 = 20000;

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Process groups of live children, so the Ctrl-C handler can kill them too.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// A proxy under test; its whole process group (nginx's master and worker) dies with it.
pub struct Proc {
    child: Child,
    name: &'static str,
    stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> io::Result<Proc> {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        // Files, not pipes: nobody drains a pipe during a run, and a full pipe would stall the proxy.
        cmd.stdout(Stdio::from(fs::File::create(&stdout_path)?))
            .stderr(Stdio::from(fs::File::create(&stderr_path)?))
            .stdin(Stdio::null())
            // Its own group, so one kill reaches every process it forks.
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {:?}: {e}", cmd.get_program()))
        })?;
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.push(child.id() as i32);
        }
        Ok(Proc {
            child,
            name,
            stderr_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every port accepts a connection; fails early if the process exits.
    pub fn wait_ready(&mut self, ports: &[u16], limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!(
                        "{} exited at start ({status}): {}",
                        self.name,
                        self.stderr_tail()
                    ));
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if start.elapsed() > limit {
                    return Err(format!(
                        "{} did not listen on {addr} within {limit:?}: {}",
                        self.name,
                        self.stderr_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The process has exited (crashed) since it started.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}): {}",
                self.name,
                self.stderr_tail()
            )),
            _ => None,
        }
    }

    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        // A Rust panic says what happened on the line after `panicked at`; show that pair
        // rather than the last lines of a backtrace.
        let tail = match lines.iter().position(|l| l.contains("panicked at")) {
            Some(i) => lines[i..lines.len().min(i + 2)].join(" "),
            None => lines[lines.len().saturating_sub(3)..].join(" | "),
        };
        if tail.is_empty() {
            "(no stderr)".into()
        } else {
            tail
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        kill_group(pgid);
        let _ = self.child.wait();
        if let Ok(mut g) = LIVE_GROUPS.lock() {
            g.retain(|&p| p != pgid);
        }
    }
}

/// On Ctrl-C or SIGTERM, kill every child group before exiting (Drop does not run then).
/// `bench` names the bench in the messages.
pub fn install_signal_cleanup(bench: &'static str) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) else {
        eprintln!("warning: cannot install signal handlers; Ctrl-C may leave proxies running");
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            if let Ok(g) = LIVE_GROUPS.lock() {
                for &pgid in g.iter() {
                    kill_group(pgid);
                }
            }
            eprintln!("{bench}: interrupted (signal {sig}); children killed");
            std::process::exit(130);
        }
    });
}

/// Raises the soft `RLIMIT_NOFILE` up to [`NOFILE`] (or the hard limit); the proxies
/// inherit it.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = NOFILE.min(lim.rlim_max);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Sssonector,
    Haproxy,
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sssonector => "sssonector",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }
}

/// A proxy to measure: where its binary is and how to start it.
pub struct Proxy {
    pub kind: Kind,
    pub bin: PathBuf,
    pub version: String,
    /// `load_module` line for nginx's stream module, when it is built as a dynamic module.
    nginx_stream_module: Option<PathBuf>,
}

/// One listener of a proxy: `127.0.0.1:port` forwarded to `upstream`.
pub struct Route {
    pub name: &'static str,
    pub port: u16,
    pub upstream: SocketAddr,
}

pub fn free_port() -> io::Result<u16> {
    // The kernel picks a free port; it stays free until the proxy binds it a moment later
    // (nothing else on this loopback-only bench races for it).
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn first_line(mut cmd: Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// Where nginx's stream module .so is, if this nginx builds stream as a dynamic module.
fn nginx_stream_module(nginx: &Path) -> Result<Option<PathBuf>, String> {
    let out = Command::new(nginx)
        .arg("-V")
        .output()
        .map_err(|e| format!("cannot run nginx -V: {e}"))?;
    let v =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if v.contains("--with-stream ") || v.trim_end().ends_with("--with-stream") {
        return Ok(None); // built in
    }
    if !v.contains("--with-stream=dynamic") {
        return Err("this nginx has no stream module".into());
    }
    let mut candidates = vec![PathBuf::from("/usr/lib/nginx/modules/ngx_stream_module.so")];
    // Debian enables it with a `load_module modules/...so;` line relative to /usr/share/nginx.
    if let Ok(dir) = fs::read_dir("/etc/nginx/modules-enabled") {
        for e in dir.flatten() {
            if let Ok(text) = fs::read_to_string(e.path()) {
                for word in text.split_whitespace() {
                    let w = word.trim_end_matches(';');
                    if w.ends_with("ngx_stream_module.so") {
                        let p = PathBuf::from(w);
                        candidates.push(if p.is_absolute() {
                            p
                        } else {
                            Path::new("/usr/share/nginx").join(p)
                        });
                    }
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|p| p.exists())
        .map(Some)
        .ok_or_else(|| {
            "nginx's stream module is not installed (apt-get install libnginx-mod-stream)".into()
        })
}

impl Proxy {
    /// Starts this proxy with one listener per route, its config and logs in `dir`, and
    /// waits until every listener accepts. `sssonector_connection` is the YAML under
    /// `connection:` in sssonector's config, indented by two spaces; the peers' configs are
    /// the same for every bench.
    pub fn start(
        &self,
        dir: &Path,
        routes: &[Route],
        sssonector_connection: &str,
    ) -> Result<Proc, String> {
        let pairs = routes.iter().map(|r| (r.name, r.port, r.upstream));
        let mut cmd;
        match self.kind {
            Kind::Sssonector => {
                let mut y = String::from("workers: 1\nlisteners:\n");
                for (name, port, u) in pairs {
                    let _ = write!(
                        y,
                        "  - name: {name}\n    listen: 127.0.0.1:{port}\n    upstreams: [\"{u}\"]\n"
                    );
                }
                y.push_str("connection:\n");
                y.push_str(sssonector_connection);
                // Metrics on (the default) or off, to measure what they cost.
                if std::env::var("SSSONECTOR_BENCH_METRICS").as_deref() == Ok("off") {
                    y.push_str("  monitoring:\n    enabled: false\n");
                }
                let path = dir.join("sssonector.yaml");
                fs::write(&path, y).map_err(|e| format!("cannot write config: {e}"))?;
                cmd = Command::new(&self.bin);
                cmd.arg("--config").arg(&path).args(["--workers", "1"]);
                // The admin server on a free port: 9090 may be taken on this host. A build
                // from before the admin server (SSSONECTOR_BENCH_BIN, to compare) has no
                // such flag: SSSONECTOR_BENCH_LEGACY=1 leaves it out.
                if std::env::var("SSSONECTOR_BENCH_LEGACY").as_deref() != Ok("1") {
                    cmd.args(["--admin-listen", "127.0.0.1:0"]);
                }
                cmd.env("SSSONECTOR_LOG", "warn")
                    // Keep a panic to its message: it ends up in the failure line.
                    .env("RUST_BACKTRACE", "0");
            }
            Kind::Haproxy => {
                // maxconn 9000: 2 fds per session stays under the 20000 fd hard limit.
                let mut c = String::from(
                    "global\n  nbthread 1\n  maxconn 9000\n\
                     defaults\n  mode tcp\n  maxconn 9000\n  timeout connect 5s\n  \
                     timeout client 1h\n  timeout server 1h\n",
                );
                for (name, port, u) in pairs {
                    let _ = write!(
                        c,
                        "listen {name}\n  bind 127.0.0.1:{port}\n  server {name} {u}\n"
                    );
                }
                let path = dir.join("haproxy.cfg");
                fs::write(&path, c).map_err(|e| format!("cannot write config: {e}"))?;
                cmd = Command::new(&self.bin);
                cmd.arg("-db").arg("-f").arg(&path);
            }
            Kind::Nginx => {
                let mut c = String::new();
                if let Some(so) = &self.nginx_stream_module {
                    let _ = writeln!(c, "load_module {};", so.display());
                }
                let _ = write!(
                    c,
                    "worker_processes 1;\nworker_rlimit_nofile {NOFILE};\npid {pid};\n\
                     error_log {err} warn;\nevents {{ worker_connections 10000; }}\n\
                     stream {{\n  proxy_connect_timeout 5s;\n  proxy_timeout 1h;\n  \
                     proxy_half_close on;\n",
                    pid = dir.join("nginx.pid").display(),
                    err = dir.join("nginx-error.log").display(),
                );
                for (_, port, u) in pairs {
                    let _ = writeln!(
                        c,
                        "  server {{ listen 127.0.0.1:{port} backlog=4096; proxy_pass {u}; }}"
                    );
                }
                c.push_str("}\n");
                let path = dir.join("nginx.conf");
                fs::write(&path, c).map_err(|e| format!("cannot write config: {e}"))?;
                cmd = Command::new(&self.bin);
                cmd.arg("-p")
                    .arg(dir)
                    .arg("-c")
                    .arg(&path)
                    .arg("-e")
                    .arg(dir.join("nginx-error.log"))
                    .args(["-g", "daemon off;"]);
            }
        }
        let mut proc = Proc::spawn(self.kind.name(), cmd, dir).map_err(|e| e.to_string())?;
        let ports: Vec<u16> = routes.iter().map(|r| r.port).collect();
        proc.wait_ready(&ports, Duration::from_secs(10))?;
        Ok(proc)
    }
}

/// sssonector (this build's binary, or the one `SSSONECTOR_BENCH_BIN` names, to measure
/// an older build side by side) and whichever peers are installed, with their versions;
/// and a line for each peer that is missing.
pub fn discover() -> (Vec<Proxy>, Vec<String>) {
    let sssonector = std::env::var_os("SSSONECTOR_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sssonector")));
    let mut proxies = vec![Proxy {
        kind: Kind::Sssonector,
        version: first_line({
            let mut c = Command::new(&sssonector);
            c.arg("--version");
            c
        }) + &format!(" (--workers 1, {})", sssonector.display()),
        bin: sssonector,
        nginx_stream_module: None,
    }];
    let mut missing = Vec::new();
    match find_in_path("haproxy") {
        Some(bin) => {
            let mut c = Command::new(&bin);
            c.arg("-v");
            proxies.push(Proxy {
                kind: Kind::Haproxy,
                version: first_line(c) + " (mode tcp, nbthread 1)",
                bin,
                nginx_stream_module: None,
            });
        }
        None => missing.push("haproxy not found in PATH".to_string()),
    }
    match find_in_path("nginx") {
        Some(bin) => match nginx_stream_module(&bin) {
            Ok(module) => {
                let mut c = Command::new(&bin);
                c.arg("-v");
                proxies.push(Proxy {
                    kind: Kind::Nginx,
                    version: first_line(c) + " (stream, worker_processes 1)",
                    bin,
                    nginx_stream_module: module,
                });
            }
            Err(e) => missing.push(format!("nginx: {e}")),
        },
        None => missing.push("nginx not found in PATH".to_string()),
    }
    (proxies, missing)
}

/// The proxies in the order round `round` (0-based) runs them: the list rotated by one per
/// round (sss, haproxy, nginx; then haproxy, nginx, sss; ...), so slow drift of the machine
/// does not always hit the same proxy first or last.
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n.max(1)).collect()
}

/// What every bench starts from.
pub struct Setup {
    /// `CI=true`: a missing peer or a failed peer measurement fails the run.
    pub ci: bool,
    /// Where the markdown report goes (`target/` or `$CARGO_TARGET_DIR`).
    pub target_dir: PathBuf,
    /// The bench's work dir (configs and logs of the last run), emptied at each start.
    pub work: PathBuf,
    /// sssonector and the peers that are installed.
    pub proxies: Vec<Proxy>,
}

/// Cleanup on Ctrl-C, the fd limit, the work dir `<tmpdir>/<bench>`, and the proxies;
/// exits the process when the work dir cannot be made, or (under `CI=true`) a peer is
/// missing. `tmpdir` is the bench's `CARGO_TARGET_TMPDIR`.
pub fn setup(bench: &'static str, tmpdir: &Path) -> Setup {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    install_signal_cleanup(bench);
    raise_nofile();
    let target_dir = tmpdir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let work = tmpdir.join(bench);
    let _ = fs::remove_dir_all(&work);
    if let Err(e) = fs::create_dir_all(&work) {
        eprintln!("{bench}: cannot create {}: {e}", work.display());
        std::process::exit(1);
    }
    let (proxies, missing) = discover();
    for m in &missing {
        eprintln!("{bench}: {m}; skipping it (benches/install-peers.sh installs the peers)");
    }
    if ci && !missing.is_empty() {
        eprintln!("{bench}: CI=true and a peer is missing: failing");
        std::process::exit(1);
    }
    Setup {
        ci,
        target_dir,
        work,
        proxies,
    }
}
