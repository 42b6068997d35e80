//! The Redis server a request's round trip went to, kept by value: the after-response
//! settlement and the renewals must reach the same server (with `hash … consistent` over
//! several, another one does not hold the key's slots or counters).

use core::fmt;

use ngx::ffi::sockaddr;

/// Room for any address nginx connects to (`sockaddr_un` is the largest, 110 bytes).
const ROOM: usize = 112;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    bytes: [u8; ROOM],
    len: u8,
}

impl PeerAddr {
    /// A copy of the `len` bytes at `sa`, or `None` for no or an oversized address.
    ///
    /// # Safety
    /// `sa` is null or points at `len` readable bytes.
    pub unsafe fn copy_of(sa: *const sockaddr, len: usize) -> Option<PeerAddr> {
        if sa.is_null() || len == 0 || len > ROOM {
            return None;
        }
        let mut bytes = [0u8; ROOM];
        // SAFETY: the caller's promise: len readable bytes at sa; len <= ROOM.
        unsafe { core::ptr::copy_nonoverlapping(sa.cast::<u8>(), bytes.as_mut_ptr(), len) };
        Some(PeerAddr {
            bytes,
            len: len as u8,
        })
    }

    pub fn as_ptr(&self) -> *const sockaddr {
        self.bytes.as_ptr().cast()
    }

    pub fn len(&self) -> libc::socklen_t {
        libc::socklen_t::from(self.len)
    }

    fn family(&self) -> libc::sa_family_t {
        libc::sa_family_t::from_ne_bytes([self.bytes[0], self.bytes[1]])
    }
}

impl fmt::Display for PeerAddr {
    /// `127.0.0.1:6379`, `[::1]:6379` or `unix:/path`, for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.bytes;
        let port = u16::from_be_bytes([b[2], b[3]]);
        match i32::from(self.family()) {
            libc::AF_INET if self.len >= 8 => {
                write!(f, "{}.{}.{}.{}:{port}", b[4], b[5], b[6], b[7])
            }
            libc::AF_INET6 if self.len >= 24 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[8..24]);
                write!(f, "[{}]:{port}", std::net::Ipv6Addr::from(ip))
            }
            libc::AF_UNIX => {
                let path = &b[2..usize::from(self.len)];
                let path = path.split(|&c| c == 0).next().unwrap_or_default();
                write!(f, "unix:{}", String::from_utf8_lossy(path))
            }
            _ => write!(f, "(address family {})", self.family()),
        }
    }
}
