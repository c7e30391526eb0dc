//! The non-blocking syscalls the epoll driver makes, each returning `Ok(n)` or the
//! errno as io_uring would report it (`-errno` is made by the caller).

use std::os::fd::RawFd;

use crate::driver::sys::RawSockAddr;

/// `Ok(value)` or `Err(errno)`.
pub(super) type Sys = Result<usize, i32>;

fn ret(n: isize) -> Sys {
    if n < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(n as usize)
    }
}

pub(super) fn accept(fd: RawFd) -> Sys {
    // SAFETY: no address is asked for (null pointers are allowed); the new fd is handed
    // to the worker in the completion, which owns it from then on.
    ret(unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    } as isize)
}

/// Receives into `len` bytes at `buf`, which must be a free slot the driver took for it.
pub(super) fn recv(fd: RawFd, buf: *mut u8, len: usize) -> Sys {
    // SAFETY: `buf` points at `len` writable bytes of a registry slot that the driver
    // took out of the free list for this call; nothing else reads or writes it meanwhile.
    ret(unsafe { libc::recv(fd, buf.cast(), len, libc::MSG_DONTWAIT) })
}

/// Whether a byte (or EOF, or an error) is waiting, without taking it.
pub(super) fn peek(fd: RawFd) -> Sys {
    let mut byte = 0u8;
    // SAFETY: one byte on our stack; MSG_PEEK leaves the data queued.
    ret(unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    })
}

/// Sends the parts in `iov` in one call.
pub(super) fn sendmsg(fd: RawFd, iov: &[libc::iovec]) -> Sys {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = iov.as_ptr().cast_mut();
    hdr.msg_iovlen = iov.len();
    // SAFETY: every iovec points into a registry slot that the sending direction holds
    // until this send's completion is reaped (the worker frees slots only after it);
    // the kernel only reads them during the call.
    ret(unsafe { libc::sendmsg(fd, &hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })
}

pub(super) fn connect(fd: RawFd, addr: &RawSockAddr) -> Sys {
    // SAFETY: the address is a valid sockaddr of `socklen` bytes for the call.
    ret(unsafe { libc::connect(fd, addr.as_ptr(), addr.socklen()) } as isize)
}

/// Reads an eventfd's counter.
pub(super) fn read_counter(fd: RawFd) -> Sys {
    let mut value = 0u64;
    // SAFETY: 8 bytes on our stack.
    ret(unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) })
}

/// The poll events `fd` has now, of POLLRDHUP and those always reported.
pub(super) fn hangup_events(fd: RawFd) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd on our stack; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n > 0 {
        p.revents & (libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP)
    } else {
        0
    }
}

pub(super) fn set_nonblocking(fd: RawFd) -> Sys {
    // SAFETY: fcntl on an fd with integer arguments only.
    let flags = ret(unsafe { libc::fcntl(fd, libc::F_GETFL) } as isize)?;
    // SAFETY: as above.
    ret(unsafe { libc::fcntl(fd, libc::F_SETFL, flags as libc::c_int | libc::O_NONBLOCK) } as isize)
}

/// Edge-triggered interest in everything the driver waits for on `fd`.
pub(super) fn watch(epfd: RawFd, fd: RawFd) -> Sys {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: fd as u64,
    };
    // SAFETY: the event lives on our stack for the call; the kernel copies it.
    ret(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize)
}

pub(super) fn unwatch(epfd: RawFd, fd: RawFd) -> Sys {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: as in `watch`.
    ret(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev) } as isize)
}

/// Waits for events into `events` (its capacity is the most taken at once).
pub(super) fn wait(epfd: RawFd, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) -> Sys {
    events.clear();
    let cap = events.capacity().min(i32::MAX as usize);
    // SAFETY: the kernel writes at most `cap` events into the vector's spare capacity;
    // the length is set to what it reports written.
    let n = ret(
        unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), cap as i32, timeout_ms) } as isize,
    )?;
    // SAFETY: the first n entries were written by the kernel (n <= cap).
    unsafe { events.set_len(n) };
    Ok(n)
}
