//! A proxy under test as a child process in its own process group, killed on drop, on panic and on Ctrl-C; and what /proc says of a process tree (CPU time, RSS).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

/// (ppid, utime + stime in ticks) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `root` and every process below it.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((ppid, _)) = proc_stat(pid) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        for &(pid, ppid) in &parents {
            if ppid == p && seen.insert(pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    tree
}

/// utime + stime of `pids`, in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| proc_stat(p))
        .map(|(_, t)| t)
        .sum()
}

/// VmRSS of `pids`, summed, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_of_this_process() {
        let me = std::process::id();
        let (ppid, _) = proc_stat(me).expect("own /proc/PID/stat");
        assert!(ppid > 0);
        let tree = process_tree(ppid);
        assert!(tree.contains(&me) && tree[0] == ppid, "{tree:?}");
        assert!(rss_kib(&[me]) > 0);
        assert!(clock_ticks_per_sec() > 0);
        assert_eq!(proc_stat(u32::MAX), None);
    }
}
