//! The driver of `scripts/soak.sh`: runs the proxy binary in front of two built-in echo
//! upstreams and, for MINUTES, drives mixed load through it — churn (connect, 32 bytes,
//! close), request/response on persistent connections, 1 MiB bulk echoes — while a fault
//! is injected every few seconds, in turn: upstream A killed (listener closed, every
//! connection reset) and restarted 2 s later, a client that resets mid-bulk, a client that
//! never reads, a client that half-closes and goes silent, a client sending one byte per
//! 200 ms. Every minute it prints the proxy's RSS and fds (from /proc) and its sessions,
//! buffer slots in use and idle pool (from /metrics). At the end the load stops and the
//! quiet proxy is compared with the quiet proxy before the load; any corrupted byte, or a
//! session, slot or fd left over, makes it exit 1. The proxy runs with
//! `session.idle_timeout: 30s` (see docs/reliability.md for why).
//!
//! `cargo run --release --example soak -- PROXY_BINARY MINUTES [FAULT_EVERY_SECS]`

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const IO: Duration = Duration::from_secs(20);

/// A thread-per-connection echo server that can be killed and restarted on its port.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<(u64, TcpStream)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(addr: SocketAddr) -> io::Result<Server> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let listener: std::net::TcpListener = s.into();
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<(u64, TcpStream)>>> = Arc::default();
        let (st, cs) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 0u64;
            for conn in listener.incoming() {
                if st.load(Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                next += 1;
                let id = next;
                if let Ok(c) = conn.try_clone() {
                    cs.lock().expect("conns").push((id, c));
                }
                let cs = cs.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        echo(conn);
                        cs.lock().expect("conns").retain(|(i, _)| *i != id);
                    });
            }
        });
        Ok(Server {
            addr,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// Closes the listener and resets every connection, as a crashed server would.
    fn kill(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, c) in self.conns.lock().expect("conns").drain(..) {
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn echo(conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(300)));
    sssonector_loopback::echo_blocking(conn);
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    corrupt: AtomicU64,
}

impl Counts {
    /// Counts one operation: `Ok(true)` exact, `Ok(false)` wrong bytes, `Err` cut short.
    fn record(&self, r: io::Result<bool>) {
        match r {
            Ok(true) => self.ok.fetch_add(1, Relaxed),
            Ok(false) => self.corrupt.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let c = TcpStream::connect_timeout(&addr, IO)?;
    c.set_read_timeout(Some(IO))?;
    c.set_write_timeout(Some(IO))?;
    Ok(c)
}

/// Sends `body`, half-closes, reads to the end: whether the echo is exact. A stream cut
/// short (a fault) is an error; wrong bytes are `Ok(false)`.
fn round_trip(addr: SocketAddr, body: Vec<u8>) -> io::Result<bool> {
    let mut c = connect(addr)?;
    let mut w = c.try_clone()?;
    let expect = body.clone();
    let sender = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&body)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(expect.len());
    let read = c.read_to_end(&mut got);
    let sent = sender.join().map_err(|_| io::Error::other("sender"))?;
    if got.len() > expect.len() || got[..] != expect[..got.len()] {
        return Ok(false);
    }
    read?;
    sent?;
    if got.len() < expect.len() {
        return Err(io::Error::other("short"));
    }
    Ok(true)
}

fn request_response(addr: SocketAddr, stop: &AtomicBool, counts: &Counts, seed: u64) {
    let mut conn: Option<TcpStream> = None;
    let mut i = seed;
    while !stop.load(Relaxed) {
        i += 1;
        let c = match conn.take().map_or_else(|| connect(addr), Ok) {
            Ok(c) => c,
            Err(e) => {
                counts.record(Err(e));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let req = pattern(64, i);
        let mut back = vec![0u8; 64];
        let r = (&c)
            .write_all(&req)
            .and_then(|_| (&c).read_exact(&mut back))
            .map(|_| back == req);
        let keep = matches!(r, Ok(true));
        counts.record(r);
        if keep {
            conn = Some(c);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One fault, by turn; long ones run on their own thread and end by themselves.
fn inject(turn: usize, addr: SocketAddr, server_a: &Mutex<Server>) -> Option<JoinHandle<()>> {
    let hold = Duration::from_secs(15);
    match turn % 5 {
        0 => {
            let port = {
                let mut a = server_a.lock().expect("server a");
                a.kill();
                a.addr
            };
            std::thread::sleep(Duration::from_secs(2));
            match Server::start(port) {
                Ok(s) => *server_a.lock().expect("server a") = s,
                Err(e) => eprintln!("soak: restarting upstream A on {port}: {e}"),
            }
            None
        }
        1 => {
            if let Ok(mut c) = connect(addr) {
                let _ = c.write_all(&pattern(512 * 1024, 7));
                let _ = c.read_exact(&mut [0u8; 4096]);
                let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            }
            None
        }
        2 => Some(std::thread::spawn(move || {
            if let Ok(mut c) = connect(addr) {
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                let chunk = vec![3u8; 64 * 1024];
                let mut sent = 0;
                while sent < 64 << 20 && c.write_all(&chunk).is_ok() {
                    sent += chunk.len();
                }
                std::thread::sleep(hold);
            }
        })),
        3 => Some(std::thread::spawn(move || {
            if let Ok(mut c) = connect(addr) {
                let _ = c.write_all(&pattern(1000, 9));
                let _ = c.shutdown(Shutdown::Write);
                std::thread::sleep(hold);
            }
        })),
        _ => Some(std::thread::spawn(move || {
            if let Ok(mut c) = connect(addr) {
                for b in pattern(50, 11) {
                    if c.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = c.read_exact(&mut [0u8; 50]);
            }
        })),
    }
}

struct Sample {
    rss_kib: u64,
    fds: usize,
    sessions: f64,
    slots: f64,
    idle: f64,
}

fn sample(pid: u32, admin: SocketAddr) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // The least of a few counts: a health probe or a pool dial holds an fd for a moment.
    let fds = (0..10)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
        })
        .min()
        .unwrap_or(0);
    let metrics = scrape(admin).unwrap_or_default();
    let get = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Sample {
        rss_kib,
        fds,
        sessions: get("sssonector_pool_active_connections"),
        slots: get("sssonector_buffer_slots_in_use"),
        idle: get("sssonector_pool_idle_connections"),
    }
}

fn scrape(admin: SocketAddr) -> io::Result<String> {
    let mut c = connect(admin)?;
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    c.read_to_string(&mut body)?;
    Ok(body)
}

fn run(proxy: &str, minutes: u64, fault_every: u64) -> Result<bool, String> {
    let a = Server::start("127.0.0.1:0".parse().expect("addr")).map_err(|e| e.to_string())?;
    let b = Server::start("127.0.0.1:0".parse().expect("addr")).map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("sssonector-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("soak.yaml");
    let yaml = format!(
        "listeners:\n  - name: soak\n    listen: 127.0.0.1:0\n    upstreams: [{}, {}]\n\
         workers: 2\nconnection:\n  pool:\n    max_idle: 20\n    retry_interval: 500ms\n\
         \x20   max_retries: 1\n  health_check:\n    interval: 1s\n    timeout: 500ms\n\
         \x20   fall: 2\n    rise: 2\n  session:\n    idle_timeout: 30s\n  monitoring:\n    listen: 127.0.0.1:0\n",
        a.addr, b.addr
    );
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let mut child = Command::new(proxy)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{proxy}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    let log_path = dir.join("proxy.log");
    let log_lines = Arc::new(AtomicU64::new(0));
    let ll = log_lines.clone();
    std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            ll.fetch_add(1, Relaxed);
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if line.contains("addr=") {
                let _ = tx.send(line);
            }
        }
    });
    let addr_of = |line: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))?
            .parse()
            .ok()
    };
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "the proxy never logged its addresses".to_string())?;
        if line.contains("admin server listening") {
            admin = addr_of(&line);
        } else if line.contains("listening") {
            addr = addr_of(&line);
        }
    }
    let (addr, admin) = (addr.expect("addr"), admin.expect("admin"));
    println!(
        "soak: proxy pid {pid} on {addr}, admin {admin}, log {}",
        dir.display()
    );
    std::thread::sleep(Duration::from_secs(3));
    let before = sample(pid, admin);
    println!(
        "{:>6} {:>9} {:>5} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7}",
        "minute", "rss_kib", "fds", "sessions", "slots", "pool_idle", "ok", "failed", "corrupt"
    );
    let counts = Arc::new(Counts::default());
    let print = |label: &str, s: &Sample| {
        println!(
            "{label:>6} {:>9} {:>5} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7}",
            s.rss_kib,
            s.fds,
            s.sessions,
            s.slots,
            s.idle,
            counts.ok.load(Relaxed),
            counts.failed.load(Relaxed),
            counts.corrupt.load(Relaxed)
        );
    };
    print("quiet", &before);

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..2u64 {
        let (stop, counts) = (stop.clone(), counts.clone());
        load.push(std::thread::spawn(move || {
            let mut i = t << 40;
            while !stop.load(Relaxed) {
                i += 1;
                counts.record(round_trip(addr, pattern(32, i)));
                std::thread::sleep(Duration::from_millis(10));
            }
        }));
    }
    for t in 0..4u64 {
        let (stop, counts) = (stop.clone(), counts.clone());
        load.push(std::thread::spawn(move || {
            request_response(addr, &stop, &counts, (t + 8) << 40)
        }));
    }
    {
        let (stop, counts) = (stop.clone(), counts.clone());
        load.push(std::thread::spawn(move || {
            let mut i = 1u64 << 50;
            while !stop.load(Relaxed) {
                i += 1;
                counts.record(round_trip(addr, pattern(1 << 20, i)));
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }

    let server_a = Mutex::new(a);
    let started = Instant::now();
    let end = started + Duration::from_secs(60 * minutes);
    let mut faults = Vec::new();
    let (mut turn, mut minute) = (0usize, 0u64);
    let mut next_fault = started + Duration::from_secs(fault_every);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_fault {
            faults.extend(inject(turn, addr, &server_a));
            turn += 1;
            next_fault += Duration::from_secs(fault_every);
        }
        if started.elapsed() >= Duration::from_secs(60 * (minute + 1)) {
            minute += 1;
            print(&minute.to_string(), &sample(pid, admin));
        }
    }
    stop.store(true, Relaxed);
    for t in load.into_iter().chain(faults) {
        let _ = t.join();
    }
    // Quiet again: the pool refills, the faulty clients are gone. A client that reset
    // while its upstream had stopped reading leaves a session that only the 30 s idle
    // timeout ends (docs/reliability.md, "Found"): wait past it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = sample(pid, admin);
    while (after.sessions != 0.0 || after.slots != 0.0 || after.fds != before.fds)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        after = sample(pid, admin);
    }
    print("quiet", &after);
    let corrupt = counts.corrupt.load(Relaxed);
    println!(
        "soak: {turn} faults injected; {} proxy log lines; rss {} -> {} KiB",
        log_lines.load(Relaxed),
        before.rss_kib,
        after.rss_kib
    );
    let clean = corrupt == 0 && after.sessions == 0.0 && after.slots == 0.0;
    let fds_back = after.fds == before.fds;
    if !fds_back {
        println!(
            "soak: fds {} before the load, {} after",
            before.fds, after.fds
        );
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    Ok(clean && fds_back)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(proxy), Some(minutes)) = (args.first(), args.get(1).and_then(|m| m.parse().ok()))
    else {
        eprintln!("usage: soak PROXY_BINARY MINUTES [FAULT_EVERY_SECS]");
        return ExitCode::from(2);
    };
    let every = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    match run(proxy, minutes, every) {
        Ok(true) => {
            println!("soak: ok");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("soak: FAILED (corrupt bytes, or sessions/slots/fds left over)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
