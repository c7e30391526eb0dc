//! The proxies the benches compare (sssonector and its variants, HAProxy, nginx): finding them, writing their configs and starting each; the setup every bench starts from.
//!
//! Every proxy runs as a [`Proc`]: a child process that cannot outlive the bench.
//!
//! A variant of sssonector (the same binary with other command-line arguments, e.g.
//! another data plane) is one more line in [`SSSONECTOR_VARIANTS`]: it gets its own
//! column, ratios to the peers and work directory in every bench.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sssonector_loopback::{raise_nofile, NOFILE};

use crate::processes::{install_signal_cleanup, Proc};

/// The program a proxy runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Sssonector,
    Haproxy,
    Nginx,
}

impl Kind {
    /// sssonector, in whichever variant, as opposed to a peer.
    pub fn is_ours(self) -> bool {
        self == Kind::Sssonector
    }
}

/// One way of running sssonector that the benches measure.
pub struct Variant {
    /// Its column in the reports and its work subdirectory.
    pub name: &'static str,
    /// Its name in ratio columns (`sss ÷ haproxy`).
    pub short: &'static str,
    /// Arguments it runs with besides `--config`, `--workers 1` and `--admin-listen`.
    pub args: &'static [&'static str],
}

/// The sssonector variants every bench measures, in column order; another one is one
/// more line here. `sssonector` runs on the default `data_plane: auto` (io_uring on a
/// machine that allows it, and a build from before the epoll driver understands it);
/// the epoll column is the price of the fallback that a container under a seccomp
/// profile refusing io_uring gets. `SSSONECTOR_BENCH_VARIANTS=sssonector` (a comma
/// list) measures only those, e.g. for an older build given as `SSSONECTOR_BENCH_BIN`.
pub const SSSONECTOR_VARIANTS: &[Variant] = &[
    Variant {
        name: "sssonector",
        short: "sss",
        args: &[],
    },
    Variant {
        name: "sssonector-epoll",
        short: "sss-epoll",
        args: &["--data-plane", "epoll"],
    },
];

/// The peers, in column order after the sssonector variants.
pub const PEERS: &[(&str, Kind)] = &[("haproxy", Kind::Haproxy), ("nginx", Kind::Nginx)];

/// The variants this run measures (`SSSONECTOR_BENCH_VARIANTS`, else all).
fn variants() -> impl Iterator<Item = &'static Variant> {
    let chosen = std::env::var("SSSONECTOR_BENCH_VARIANTS").ok();
    SSSONECTOR_VARIANTS.iter().filter(move |v| {
        chosen
            .as_deref()
            .map_or(true, |list| list.split(',').any(|n| n.trim() == v.name))
    })
}

/// A column of a report: a proxy that may or may not be installed (its cells then say
/// `skipped`).
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// For sssonector variants: the name in ratio columns.
    pub short: &'static str,
}

/// Every proxy a report has a column for: the sssonector variants, then the peers.
pub fn columns() -> Vec<Column> {
    variants()
        .map(|v| Column {
            name: v.name,
            kind: Kind::Sssonector,
            short: v.short,
        })
        .chain(PEERS.iter().map(|&(name, kind)| Column {
            name,
            kind,
            short: name,
        }))
        .collect()
}

/// A proxy to measure: where its binary is and how to start it.
pub struct Proxy {
    pub kind: Kind,
    /// Its column in the reports and its work subdirectory: a variant's name, or the peer's.
    pub name: &'static str,
    pub bin: PathBuf,
    pub version: String,
    /// sssonector's extra arguments (its variant's).
    args: &'static [&'static str],
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
                cmd.arg("--config")
                    .arg(&path)
                    .args(["--workers", "1"])
                    .args(self.args);
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
        let mut proc = Proc::spawn(self.name, cmd, dir).map_err(|e| e.to_string())?;
        let ports: Vec<u16> = routes.iter().map(|r| r.port).collect();
        proc.wait_ready(&ports, Duration::from_secs(10))?;
        Ok(proc)
    }
}

/// sssonector's variants (each running `sssonector`, this build's binary, or the one
/// `SSSONECTOR_BENCH_BIN` names, to measure an older build side by side) and whichever
/// peers are installed, with their versions; and a line for each peer that is missing.
pub fn discover(sssonector: &Path) -> (Vec<Proxy>, Vec<String>) {
    let sssonector = std::env::var_os("SSSONECTOR_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| sssonector.to_path_buf());
    let version = first_line({
        let mut c = Command::new(&sssonector);
        c.arg("--version");
        c
    });
    let mut proxies: Vec<Proxy> = variants()
        .map(|v| Proxy {
            kind: Kind::Sssonector,
            name: v.name,
            version: format!(
                "{version} (--workers 1{}, {})",
                v.args.iter().map(|a| format!(" {a}")).collect::<String>(),
                sssonector.display()
            ),
            bin: sssonector.clone(),
            args: v.args,
            nginx_stream_module: None,
        })
        .collect();
    let mut missing = Vec::new();
    match find_in_path("haproxy") {
        Some(bin) => {
            let mut c = Command::new(&bin);
            c.arg("-v");
            proxies.push(Proxy {
                kind: Kind::Haproxy,
                name: "haproxy",
                version: first_line(c) + " (mode tcp, nbthread 1)",
                bin,
                args: &[],
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
                    name: "nginx",
                    version: first_line(c) + " (stream, worker_processes 1)",
                    bin,
                    args: &[],
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
    /// sssonector's variants and the peers that are installed.
    pub proxies: Vec<Proxy>,
}

/// Cleanup on Ctrl-C, the fd limit, the work dir `<tmpdir>/<bench>`, and the proxies;
/// exits the process when the work dir cannot be made, or (under `CI=true`) a peer is
/// missing. `tmpdir` is the bench's `CARGO_TARGET_TMPDIR`, `sssonector` the proxy's binary
/// (`CARGO_BIN_EXE_sssonector`).
pub fn setup(bench: &'static str, tmpdir: &Path, sssonector: &Path) -> Setup {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    install_signal_cleanup(bench);
    if let Err(e) = raise_nofile(NOFILE) {
        eprintln!("{bench}: cannot raise RLIMIT_NOFILE: {e}");
    }
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
    let (proxies, missing) = discover(sssonector);
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
