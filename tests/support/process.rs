//! The proxy binary as a child process, for what needs a process (signals, logs).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The proxy binary on a config file, with its stderr collected on a thread (so logging
/// never blocks on a full pipe).
pub struct BinaryProxy {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl BinaryProxy {
    pub fn start(yaml: &str, dir: &std::path::Path) -> BinaryProxy {
        BinaryProxy::start_with(yaml, dir, &[], "info")
    }

    pub fn start_with(
        yaml: &str,
        dir: &std::path::Path,
        args: &[&str],
        filter: &str,
    ) -> BinaryProxy {
        let path = dir.join("sssonector.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sssonector"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_remove("SSSONECTOR_LOG")
            .env("RUST_LOG", filter)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sssonector");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        BinaryProxy {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The `addr=` of the first log line containing `marker`.
    pub fn addr_from_log(&mut self, marker: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = self.log.iter().find(|l| l.contains(marker)).and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok())
            }) {
                return addr;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!("no `{marker}` line in the log:\n{}", self.log.join("\n")),
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit; `None` past `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `marker` has appeared in `n` log lines; returns the n-th.
    pub fn wait_for_line(&mut self, marker: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<&String> = self.log.iter().filter(|l| l.contains(marker)).collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "no {n} `{marker}` lines in the log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    pub fn log_text(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
