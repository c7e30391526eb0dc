//! Listen addresses as configuration: each one is tried (bound and released at once)
//! before a start and by `check`, and a bind that fails is reported as the user's
//! configuration error it is, with the listener, its key, and what holds the port when
//! the OS can tell (`/proc/net/tcp{,6}`, then the `/proc/*/fd` link to that socket).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

use super::validate::{overlaps, Validator};
use super::{Config, ConfigError};

impl Config {
    /// Binds each listener address the way a start would compete for it, and releases
    /// it at once. A port held by another process (including another sssonector, which
    /// the workers' `SO_REUSEPORT` would otherwise share it with silently), an address
    /// this machine does not have, or a port it may not use is an error on
    /// `listeners[N].listen`. Port 0 is skipped: any free port does.
    pub fn probe_listeners(&self) -> Result<(), ConfigError> {
        for l in &self.listeners {
            if l.listen.port() == 0 {
                continue;
            }
            if let Err(e) = try_bind(l.listen) {
                return Err(self.bind_error(&l.name, l.listen, &e));
            }
        }
        Ok(())
    }

    /// A failed bind of listener `name` on `addr` as a configuration error on its key,
    /// with the line when the config came from a file.
    pub fn bind_error(&self, name: &str, addr: SocketAddr, e: &io::Error) -> ConfigError {
        let v = Validator::new(&self.source);
        let i = self.listeners.iter().position(|l| l.name == name);
        let key = match i {
            Some(i) => v.listener_key(i, "listen"),
            None => "listeners".to_string(),
        };
        let err = v.err(
            &key,
            format!(
                "listener `{name}` cannot listen on {addr}: {}",
                explain(addr, e)
            ),
        );
        match &self.source.path {
            Some(p) => err.in_file(std::path::Path::new(p)),
            None => err,
        }
    }
}

/// Whether a bind failure comes from the address the user configured (rather than from
/// the machine: no sockets left, no memory).
pub fn is_config_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EADDRINUSE
                | libc::EADDRNOTAVAIL
                | libc::EACCES
                | libc::EPERM
                | libc::EAFNOSUPPORT
        )
    )
}

fn try_bind(addr: SocketAddr) -> io::Result<()> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As the workers do, minus SO_REUSEPORT: with it, a port another sssonector of this
    // user listens on would look free.
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
}

/// The reason in the user's terms, with the holder of a busy port when it can be found.
fn explain(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => match holder(addr) {
            Some(who) => format!("the address is in use by {who}"),
            None => "the address is in use by another socket (its owner is not visible \
                     to this user)"
                .to_string(),
        },
        Some(libc::EADDRNOTAVAIL) => format!(
            "{} is not an address of this machine (use one of its interface addresses, \
             127.0.0.1, or `:{}` for every IPv4 address)",
            addr.ip(),
            addr.port()
        ),
        Some(libc::EACCES | libc::EPERM) if addr.port() < 1024 => format!(
            "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE \
             (e.g. `setcap cap_net_bind_service=+ep`), or use a port >= 1024 ({e})"
        ),
        _ => e.to_string(),
    }
}

/// "process 1234 (nginx)", or the owning user when the process is not visible.
fn holder(addr: SocketAddr) -> Option<String> {
    let (inode, uid) = listening_socket(addr)?;
    let link = format!("socket:[{inode}]");
    let procs = std::fs::read_dir("/proc").ok()?;
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let owns = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == link.as_str()));
        if owns {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            return Some(format!("process {pid} ({})", comm.trim()));
        }
    }
    Some(format!(
        "a process of {} (not visible to this user)",
        user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
    ))
}

/// Inode and uid of a listening TCP socket whose address competes with `addr`.
fn listening_socket(addr: SocketAddr) -> Option<(u64, u32)> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some(local) = parse_proc_addr(f[1]) else {
                continue;
            };
            if overlaps(local, addr) {
                let inode = f[9].parse().ok()?;
                let uid = f[7].parse().unwrap_or(u32::MAX);
                return Some((inode, uid));
            }
        }
    }
    None
}

/// `0100007F:20FB` (IPv4) or 32 hex digits and a port (IPv6), as `/proc/net/tcp*` prints
/// them: each 32-bit word in host byte order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The login name of `uid` from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:20FB"),
            Some("127.0.0.1:8443".parse().expect("literal"))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().expect("literal"))
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn a_busy_port_names_this_process() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let e = try_bind(addr).expect_err("the port is held");
        assert!(is_config_error(&e), "{e}");
        let why = explain(addr, &e);
        assert!(
            why.contains(&format!("process {}", std::process::id())),
            "{why}"
        );
        drop(held);
    }
}
