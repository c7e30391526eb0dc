//! Safe wrappers for the few socket syscalls the data plane makes outside the ring.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A socket address in the form `connect(2)` takes, kept at a fixed heap address.
pub struct RawSockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawSockAddr {
    pub fn new(addr: SocketAddr) -> RawSockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        RawSockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    pub fn socklen(&self) -> libc::socklen_t {
        self.len
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn family(addr: &SocketAddr) -> libc::c_int {
    match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int on our stack, its size passed alongside.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A non-blocking TCP socket of `addr`'s family, owned by the caller.
pub fn stream_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory arguments; the fd is checked before being owned.
    let fd = check(unsafe {
        libc::socket(
            family(addr),
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A listening socket with SO_REUSEPORT, so each worker can have its own on one address.
pub fn reuseport_listener(addr: &SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let sock = stream_socket(addr)?;
    let fd = sock.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let raw = RawSockAddr::new(*addr);
    // SAFETY: raw holds a valid sockaddr of raw.socklen() bytes.
    check(unsafe { libc::bind(fd, raw.as_ptr(), raw.socklen()) })?;
    // SAFETY: listen(2) on a bound socket we own.
    check(unsafe { libc::listen(fd, backlog) })?;
    Ok(sock)
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                u16::from_be(sin6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn name_of(
    fd: RawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are ours and sized for any socket address.
    check(unsafe {
        f(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    sockaddr_to_std(&storage)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an inet socket"))
}

/// The address a socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// The address of a socket's peer.
pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getpeername)
}

/// Disables Nagle: a proxy must not add latency to small writes.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Passes a FIN on: no more data will be written to `fd`.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) has no memory arguments.
    check(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}

/// Takes a listening socket out of LISTEN (Linux): connects to its port are refused
/// from now on, and a pending accept on it completes with an error. The fd stays open.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: shutdown(2) has no memory arguments.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Closes a socket the caller owns as a raw fd; with `reset`, the peer gets an RST.
pub fn close(fd: RawFd, reset: bool) {
    if fd < 0 {
        return;
    }
    if reset {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: linger is on our stack with its size passed alongside. A failure only
        // means the peer gets a FIN instead of an RST.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    // SAFETY: the caller owned fd and hands it over here; no op uses it any more.
    unsafe {
        libc::close(fd);
    }
}

/// An eventfd another thread writes to wake a worker blocked in the ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) has no memory arguments; the fd is checked before being owned.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from our stack; an error (counter overflow) is harmless here.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), 8);
    }
}

/// Raises the soft open-file limit to the hard one: every session costs two fds.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        check(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            check(libc::setrlimit(libc::RLIMIT_NOFILE, &lim))?;
        }
    }
    Ok(lim.rlim_cur)
}

/// Keepalive and TCP_USER_TIMEOUT on an upstream socket, so a peer that vanished without
/// a FIN or RST (half-open) is found: probes after 30 s idle, every 10 s, 3 of them; data
/// unacknowledged for 60 s fails the connection.
pub fn set_upstream_keepalive(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 60_000)
}

/// An epoll instance: the pool keeper watches idle pooled connections with it, outside
/// every worker's ring, so any worker can take one without cancelling a ring op first.
pub fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1(2) has no memory arguments; the fd is checked before being owned.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev lives on our stack for the call; the kernel copies it.
    check(unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) }).map(drop)
}

/// Reports once (one-shot) when the peer of `fd` sends its first bytes (`EPOLLIN`), closes
/// its side (FIN: `EPOLLRDHUP`) or resets it (`EPOLLERR`/`EPOLLHUP`, always reported).
pub fn epoll_watch_first_bytes_or_close(epfd: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    epoll_ctl(
        epfd,
        libc::EPOLL_CTL_ADD,
        fd,
        (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
        data,
    )
}

/// Re-arms a one-shot watch on `fd` for a close or reset only, whatever is queued.
pub fn epoll_rewatch_close(epfd: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    epoll_ctl(
        epfd,
        libc::EPOLL_CTL_MOD,
        fd,
        (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
        data,
    )
}

/// Reports (level-triggered) when `fd` is readable.
pub fn epoll_watch_readable(epfd: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, data)
}

/// Stops watching `fd`.
pub fn epoll_unwatch(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0)
}

/// Waits up to `timeout_ms` for events; `out` gets `(data, events)` of each.
pub fn epoll_wait(epfd: RawFd, out: &mut Vec<(u64, u32)>, timeout_ms: i32) -> io::Result<()> {
    const MAX: usize = 256;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
    // SAFETY: the kernel writes at most MAX events into the array on our stack.
    let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), MAX as libc::c_int, timeout_ms) };
    out.clear();
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    for ev in &events[..n as usize] {
        let (data, bits) = (ev.u64, ev.events);
        out.push((data, bits));
    }
    Ok(())
}

/// Resets an eventfd's counter (after it woke a waiter).
pub fn eventfd_drain(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into our stack; EAGAIN (already zero) is harmless.
    unsafe {
        libc::read(fd, (&mut value as *mut u64).cast(), 8);
    }
}

/// A non-blocking eventfd (the pool keeper's wake-up, read from an epoll loop).
pub fn eventfd_nonblocking() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) has no memory arguments; the fd is checked before being owned.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a TCP socket is still `ESTABLISHED`: a FIN from the peer moves it to
/// `CLOSE_WAIT`, a reset to `CLOSE`, whatever data is still queued (one `TCP_INFO` read).
pub fn tcp_established(fd: RawFd) -> bool {
    const TCP_ESTABLISHED: u8 = 1;
    // tcpi_state is the first byte of struct tcp_info; the kernel copies at most optlen.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` on our stack.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    ret == 0 && len >= 1 && info[0] == TCP_ESTABLISHED
}

/// The pending error of a socket (`SO_ERROR`), if any: `ECONNRESET` after a reset.
pub fn socket_error(fd: RawFd) -> Option<i32> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes one c_int into `err` on our stack.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (ret == 0 && err != 0).then_some(err)
}

/// Takes ownership of a raw fd the caller owned and no op uses any more.
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller owned `fd` (an open socket it created or accepted), hands it
    // over here, and no op in flight refers to it, so exactly one owner closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Discards whatever the peer sent that nobody read (a server's greeting on a pooled
/// connection), so that closing `fd` sends a FIN rather than the RST that closing with
/// unread data would send. Reads at most a few hundred KiB; never blocks.
pub fn discard_unread(fd: RawFd) {
    for _ in 0..4 {
        // SAFETY: with MSG_TRUNC and a null buffer TCP discards the bytes it would have
        // copied: no memory is written.
        let n = unsafe {
            libc::recv(
                fd,
                std::ptr::null_mut(),
                64 * 1024,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n <= 0 {
            return;
        }
    }
}

/// Makes SIGPIPE ignored process-wide. `WriteFixed` (send_mode `fixed`) cannot pass
/// `MSG_NOSIGNAL`, so a write to a peer that reset raises SIGPIPE, whose default action
/// kills the process. Rust binaries ignore it already; a program embedding the library
/// may not. Returns whether it had to change the disposition.
pub fn ignore_sigpipe() -> io::Result<bool> {
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only reads the current one into `old`.
    check(unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) })?;
    if old.sa_sigaction == libc::SIG_IGN {
        return Ok(false);
    }
    if old.sa_sigaction != libc::SIG_DFL {
        // The embedding program handles SIGPIPE itself: leave its handler alone.
        return Ok(false);
    }
    // SAFETY: installing SIG_IGN has no memory preconditions.
    let prev = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Bytes queued on `fd`'s socket for us to read (`SIOCINQ`); `usize::MAX` when it
/// cannot be read (so no caller takes it for an empty socket).
pub fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ (FIONREAD) writes one c_int into `n`, which we own.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r < 0 {
        usize::MAX
    } else {
        n.max(0) as usize
    }
}

/// Bytes `fd`'s socket has accepted but the peer has not acknowledged (`SIOCOUTQ`); 0
/// when it cannot be read.
pub fn unsent_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int into `n`, which we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

/// `RLIMIT_MEMLOCK`'s soft limit in bytes; `None` when unlimited (or unreadable, which
/// then shows as whatever the kernel refuses later).
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Whether the process has `CAP_IPC_LOCK` in its effective set (then io_uring charges
/// nothing to the locked-memory limit).
pub fn has_cap_ipc_lock() -> bool {
    // /proc/self/status's CapEff is the effective set in hex; no syscall needed.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The capability number of `CAP_IPC_LOCK` (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// The machine's physical memory in bytes, if the OS says.
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system parameters.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok()?;
    let page = u64::try_from(page).ok()?;
    pages.checked_mul(page).filter(|&m| m > 0)
}
