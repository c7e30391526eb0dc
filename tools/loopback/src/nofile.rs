//! Raising the soft `RLIMIT_NOFILE`, which thousands of sessions on loopback need.

use std::io;

/// File descriptors a bench process and its children may need: 4000 client sockets plus
/// 4000 accepted upstream sockets in the bench, and 8000 in the proxy; 8000 sessions of a
/// test need about 16,000 in the proxy.
pub const NOFILE: u64 = 20000;

/// Raises the soft `RLIMIT_NOFILE` to `want`, or to the hard limit if that is lower (never
/// lowers it); children inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the plain struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        let want = want.min(lim.rlim_max);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}
