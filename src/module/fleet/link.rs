//! A worker's own connection to each Redis server it settles with: what a request tells the
//! fleet after its response (the slot back, the tokens charged) and the renewals of slots
//! still held. Those cannot ride a subrequest (the LOG phase starts none, and a client that
//! left has no request to wait in), and nobody waits for their answer, so they are queued on
//! one pipelined connection per server and per worker, on nginx's event loop: commands of
//! many requests go out in one write, the replies are only checked.
//!
//! A lost command (no connection, no answer within the timeout, an error reply) is counted in
//! `relay_guard_redis_errors_total`; a lost release is made good by the slot's lease, a lost
//! charge is not retried (it may have run: retrying could charge twice).

use core::ffi::c_void;
use core::ptr;
use std::sync::Mutex;

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_cycle, ngx_del_timer,
    ngx_event_connect_peer, ngx_event_get_peer, ngx_event_t, ngx_exiting, ngx_handle_read_event,
    ngx_handle_write_event, ngx_msec_t, ngx_peer_connection_t, ngx_str_t, sockaddr, NGX_LOG_WARN,
};

use super::peer::PeerAddr;
use super::warn::should_warn;
use crate::fleet::FleetFailure;
use crate::fleet::{encode_auth, read_ack, Ack};
use crate::metrics::{Metrics, REDIS_ERROR_KINDS};
use crate::module::ffi_util::now_ms;
use crate::module::log::rg_log;

/// Bytes queued for a server that does not take them; past it, new commands are lost (and
/// counted) rather than held without bound while Redis is away.
const MAX_QUEUED: usize = 256 * 1024;
/// Replies are a few bytes each; more than this unparsed is not Redis.
const MAX_UNREAD: usize = 64 * 1024;

/// How a worker talks to one server: the settings of the request that made the link (a reload
/// starts new workers, so within a worker they do not change).
#[derive(Clone)]
pub struct LinkConf {
    pub password: Option<Vec<u8>>,
    pub timeout_ms: u64,
    pub metrics: Option<Metrics>,
}

struct Link {
    addr: PeerAddr,
    /// The server's address as text, for nginx's log lines (`pc.name` points at it).
    name: Vec<u8>,
    name_str: ngx_str_t,
    pc: ngx_peer_connection_t,
    conf: LinkConf,
    /// The open connection (null: none); `connected` once the connect completed.
    conn: *mut ngx_connection_t,
    connected: bool,
    out: Vec<u8>,
    unread: Vec<u8>,
    /// Replies owed for what was queued or written.
    owed: u64,
}

/// A link's address; `Send` so the list can be a plain static (nginx runs one thread per
/// worker: the mutex is never contended, it only satisfies the type system).
struct LinkPtr(*mut Link);
// SAFETY: links are only touched from the worker's one thread.
unsafe impl Send for LinkPtr {}

/// This worker's links, never removed (one per server it talked to), so the pointers the
/// connections' `data` hold stay valid for the process's life. A static, not a thread-local:
/// thread-local storage is freed at exit, and the links would then look leaked to valgrind.
static LINKS: Mutex<Vec<LinkPtr>> = Mutex::new(Vec::new());

/// The link to `addr`, made with `make`'s settings if there is none yet (settings are built
/// only then: a request's settlement on an existing link copies nothing).
fn link_for<F: FnOnce() -> LinkConf>(addr: &PeerAddr, make: Option<F>) -> Option<*mut Link> {
    // Never poisoned (nothing in it panics); a poisoned one would still hold valid links.
    let mut links = LINKS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: every pointer in LINKS is a leaked Box, live for the process.
    if let Some(l) = links.iter().find(|l| unsafe { &(*l.0).addr } == addr) {
        return Some(l.0);
    }
    let conf = make?();
    let name = addr.to_string().into_bytes();
    let link = Box::new(Link {
        addr: *addr,
        name_str: ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        },
        name,
        // SAFETY: all-zero is nginx's "unset" for every field of a peer connection.
        pc: unsafe { core::mem::zeroed() },
        conf,
        conn: ptr::null_mut(),
        connected: false,
        out: Vec::new(),
        unread: Vec::new(),
        owed: 0,
    });
    let l = Box::into_raw(link);
    links.push(LinkPtr(l));
    Some(l)
}

/// Queues `command` (drawing `replies` replies) for the server at `addr`, and sends it now if
/// the connection is up; `conf` makes the link's settings if this worker has no link there yet.
pub fn send(addr: &PeerAddr, conf: impl FnOnce() -> LinkConf, command: &[u8], replies: u64) {
    if let Some(l) = link_for(addr, Some(conf)) {
        queue(l, command, replies);
    }
}

/// As [`send`], only to a link this worker already has (renewals, which no request carries:
/// the request that took the slot made the link); false if there is none.
pub fn send_if_linked(addr: &PeerAddr, command: &[u8], replies: u64) -> bool {
    let Some(l) = link_for::<fn() -> LinkConf>(addr, None) else {
        return false;
    };
    queue(l, command, replies);
    true
}

/// `l` is a link from [`link_for`].
fn queue(l: *mut Link, command: &[u8], replies: u64) {
    // SAFETY: link_for's links are leaked boxes, live for the process; nginx runs one handler
    // at a time in this worker, so this is the only reference while it runs.
    let link = unsafe { &mut *l };
    if link.out.len() + command.len() > MAX_QUEUED {
        lose(link, FleetFailure::Timeout, replies);
        return;
    }
    link.out.extend_from_slice(command);
    link.owed += replies;
    if link.conn.is_null() {
        connect(link);
    } else if link.connected {
        flush(link);
    }
}

/// Makes sure a link to `addr` exists (renewals find it and its settings there).
pub fn prepare(addr: &PeerAddr, conf: impl FnOnce() -> LinkConf) {
    let _ = link_for(addr, Some(conf));
}

fn connect(link: &mut Link) {
    let auth = link.conf.password.as_ref().map(|p| {
        let mut a = Vec::new();
        encode_auth(&mut a, p);
        a
    });
    if let Some(a) = auth {
        link.out.splice(0..0, a);
        link.owed += 1;
    }
    link.name_str = ngx_str_t {
        len: link.name.len(),
        data: link.name.as_mut_ptr(),
    };
    // SAFETY: all-zero is a fresh peer connection; the fields set below are all nginx reads.
    link.pc = unsafe { core::mem::zeroed() };
    link.pc.sockaddr = link.addr.as_ptr() as *mut sockaddr;
    link.pc.socklen = link.addr.len();
    link.pc.name = &mut link.name_str;
    link.pc.get = Some(ngx_event_get_peer);
    // SAFETY: ngx_cycle is this worker's live cycle; its log outlives the link's use of it.
    link.pc.log = unsafe { (*ngx_cycle).log };
    link.pc
        .set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_ERR as _);
    // SAFETY: pc is fully set up and lives in the leaked link; nginx opens a non-blocking
    // socket, registers it with the event loop and starts the connect.
    let rc = unsafe { ngx_event_connect_peer(&mut link.pc) };
    let c = link.pc.connection;
    if c.is_null() || !(rc == 0 || rc == ngx::ffi::NGX_AGAIN as isize) {
        fail(link, FleetFailure::Connect);
        return;
    }
    link.conn = c;
    // SAFETY: c is the connection nginx just made for this link, with its two events.
    unsafe {
        (*c).data = (link as *mut Link).cast::<c_void>();
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
    }
    if rc == 0 {
        connected(link);
    } else {
        // SAFETY: the connection's write event, which reports the connect's end.
        unsafe { ngx_add_timer((*c).write, link.conf.timeout_ms as ngx_msec_t) };
    }
}

fn connected(link: &mut Link) {
    link.connected = true;
    // SAFETY: the link's live connection; nginx may already poll it (epoll adds both events
    // at connect), which this only makes sure of.
    unsafe {
        if (*(*link.conn).write).timer_set() != 0 {
            ngx_del_timer((*link.conn).write);
        }
        if ngx_handle_read_event((*link.conn).read, 0) != 0 {
            fail(link, FleetFailure::Connect);
            return;
        }
    }
    flush(link);
}

fn flush(link: &mut Link) {
    let c = link.conn;
    while !link.out.is_empty() {
        // SAFETY: reads the live connection's send function pointer.
        let Some(send) = (unsafe { (*c).send }) else {
            fail(link, FleetFailure::Connect);
            return;
        };
        // SAFETY: the live connection; send reads at most len bytes from out.
        let n = unsafe { send(c, link.out.as_mut_ptr(), link.out.len()) };
        if n > 0 {
            link.out.drain(..n as usize);
        } else if n == ngx::ffi::NGX_AGAIN as isize {
            // SAFETY: the live connection's write event.
            if unsafe { ngx_handle_write_event((*c).write, 0) } != 0 {
                fail(link, FleetFailure::Connect);
                return;
            }
            break;
        } else {
            fail(link, FleetFailure::Connect);
            return;
        }
    }
    arm_reply_timer(link);
}

/// While replies are owed, one must come within the timeout; an idle link is one nginx may
/// close at shutdown. A worker already shutting down closed its idle connections once, so a
/// link that goes idle after that closes itself (nginx alerts on a socket left open at exit).
fn arm_reply_timer(link: &mut Link) {
    // SAFETY: nginx's process flag, read by value.
    if link.owed == 0 && unsafe { ngx_exiting } != 0 {
        close(link);
        return;
    }
    let c = link.conn;
    // SAFETY: the live connection and its read event.
    unsafe {
        if link.owed > 0 {
            (*c).set_idle(0);
            ngx_add_timer((*c).read, link.conf.timeout_ms as ngx_msec_t);
        } else {
            (*c).set_idle(1);
            if (*(*c).read).timer_set() != 0 {
                ngx_del_timer((*c).read);
            }
        }
    }
}

/// The link an event's connection belongs to.
///
/// # Safety
/// `ev` is an event nginx passes to a handler this file installed.
unsafe fn link_of<'a>(ev: *mut ngx_event_t) -> Option<&'a mut Link> {
    // SAFETY: the caller's promise: ev's data is the connection whose data is a live link.
    unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        ((*c).data as *mut Link).as_mut()
    }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls this with the link connection's write event.
    let Some(link) = (unsafe { link_of(ev) }) else {
        return;
    };
    // SAFETY: the live event.
    if unsafe { (*ev).timedout() } != 0 {
        let why = if link.connected {
            FleetFailure::Timeout
        } else {
            FleetFailure::Connect
        };
        fail(link, why);
        return;
    }
    if !link.connected {
        if connect_error(link.conn) {
            fail(link, FleetFailure::Connect);
            return;
        }
        connected(link);
        return;
    }
    flush(link);
}

/// The outcome of a non-blocking connect, as nginx's upstream tests it.
fn connect_error(c: *mut ngx_connection_t) -> bool {
    let mut err: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: c is the live connection; getsockopt writes at most len bytes into err.
    let rc = unsafe {
        libc::getsockopt(
            (*c).fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == -1 || err != 0
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    // SAFETY: nginx calls this with the link connection's read event.
    let Some(link) = (unsafe { link_of(ev) }) else {
        return;
    };
    let c = link.conn;
    // SAFETY: the live connection: `close` is nginx closing idle connections at shutdown.
    if unsafe { (*c).close() } != 0 {
        close(link);
        return;
    }
    // SAFETY: the live event.
    if unsafe { (*ev).timedout() } != 0 {
        fail(link, FleetFailure::Timeout);
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads the live connection's recv function pointer.
        let Some(recv) = (unsafe { (*c).recv }) else {
            fail(link, FleetFailure::Connect);
            return;
        };
        // SAFETY: the live connection; recv writes at most buf.len() bytes into buf.
        let n = unsafe { recv(c, buf.as_mut_ptr(), buf.len()) };
        if n > 0 {
            link.unread.extend_from_slice(&buf[..n as usize]);
            if !take_replies(link) {
                return;
            }
            continue;
        }
        if n == ngx::ffi::NGX_AGAIN as isize {
            break;
        }
        // Closed by Redis (0) or an error: what is owed is lost.
        if link.owed > 0 {
            fail(link, FleetFailure::Connect);
        } else {
            close(link);
        }
        return;
    }
    // SAFETY: the live connection's read event.
    if unsafe { ngx_handle_read_event(ev, 0) } != 0 {
        fail(link, FleetFailure::Connect);
        return;
    }
    arm_reply_timer(link);
}

/// Reads every complete reply; false when the link failed (and is closed).
fn take_replies(link: &mut Link) -> bool {
    let mut errors = 0;
    loop {
        match read_ack(&link.unread) {
            Ok(None) => break,
            Ok(Some(_)) if link.owed == 0 => {
                fail(link, FleetFailure::Protocol);
                return false;
            }
            Ok(Some((ack, used))) => {
                link.unread.drain(..used);
                link.owed -= 1;
                if let Ack::Refused(text) = ack {
                    errors += 1;
                    if errors == 1 {
                        warn(link, &format!("answered \"{text}\""));
                    }
                }
            }
            Err(_) => {
                fail(link, FleetFailure::Protocol);
                return false;
            }
        }
    }
    if errors > 0 {
        count(link, FleetFailure::ErrorReply, errors);
    }
    if link.unread.len() > MAX_UNREAD {
        fail(link, FleetFailure::Protocol);
        return false;
    }
    true
}

fn count(link: &Link, why: FleetFailure, n: u64) {
    if let (Some(m), Some(kind)) = (
        link.conf.metrics.as_ref(),
        REDIS_ERROR_KINDS.iter().position(|k| *k == why.as_str()),
    ) {
        m.count_redis_errors(kind, n);
    }
}

/// `replies` worth of commands that were never queued.
fn lose(link: &Link, why: FleetFailure, replies: u64) {
    count(link, why, replies);
    warn(link, "too much is waiting for it");
}

/// Everything owed is lost; the connection goes and the next command opens a new one.
fn fail(link: &mut Link, why: FleetFailure) {
    if link.owed > 0 {
        count(link, why, link.owed);
        warn(
            link,
            &format!(
                "{} command(s) lost ({}): slots it held come back when their lease ends, tokens are not charged again",
                link.owed,
                why.as_str()
            ),
        );
    }
    close(link);
}

fn close(link: &mut Link) {
    if !link.conn.is_null() {
        // SAFETY: the link's connection, closed once here (nginx removes its timers and
        // events, and frees it for reuse).
        unsafe { ngx_close_connection(link.conn) };
    }
    link.conn = ptr::null_mut();
    link.pc.connection = ptr::null_mut();
    link.connected = false;
    link.out.clear();
    link.unread.clear();
    link.owed = 0;
}

fn warn(link: &Link, what: &str) {
    if should_warn(now_ms() / 1000) {
        // SAFETY: the worker's cycle log, live for the process.
        let log = unsafe { (*ngx_cycle).log };
        rg_log!(
            NGX_LOG_WARN,
            log,
            "the fleet's Redis {}: {what}",
            String::from_utf8_lossy(&link.name)
        );
    }
}
