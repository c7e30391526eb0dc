//! Safe wrappers for the few socket syscalls the data plane makes outside the ring.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::RawSockAddr;

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

/// Whether an idle connection is still usable, checked without consuming anything:
/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte. EOF or an error means the peer closed it;
/// EAGAIN or data (a server greeting) means alive.
pub fn peek_alive(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into our stack variable.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        return true;
    }
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
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
