//! A worker's own connection to each Redis server: every admission of its requests (the
//! nonce's `SET NX`, the limits' script), what a request tells the fleet after its response
//! (the slot back, the tokens charged) and the renewals of slots still held. One pipelined
//! connection per server and per worker, on nginx's event loop: what the worker's requests
//! queue in one turn of the loop goes out in one write (a posted event, `tick`), and the
//! replies are read in order, each as its command expects.
//!
//! An admission's request waits: its reply (or the link's failure) is handed to it from
//! `tick`, never from inside the call that queued it. The request's pool holds a cleanup
//! that detaches it, so a request that ends while its reply is owed is never touched again:
//! the reply is read and dropped.
//!
//! A lost acknowledged command (no connection, no answer within the timeout, an error reply)
//! is counted in `relay_guard_redis_errors_total`; a lost release is made good by the slot's
//! lease, a lost charge is not retried (it may have run: retrying could charge twice). A
//! lost admission gets the location's failure policy.

use core::ffi::c_void;
use core::ptr;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_current_msec, ngx_cycle,
    ngx_del_timer, ngx_delete_posted_event, ngx_event_connect_peer, ngx_event_get_peer,
    ngx_event_t, ngx_exiting, ngx_handle_read_event, ngx_handle_write_event, ngx_http_request_t,
    ngx_msec_t, ngx_peer_connection_t, ngx_pool_cleanup_add, ngx_pool_cleanup_t, ngx_post_event,
    ngx_posted_events, ngx_str_t, ngx_tcp_nodelay, sockaddr, NGX_LOG_WARN,
};

use super::peer::PeerAddr;
use super::wait;
use super::warn::should_warn;
use crate::fleet::{encode_auth, read_next, Answer, Asked, Expect, FleetFailure};
use crate::metrics::{Metrics, REDIS_ERROR_KINDS};
use crate::module::ctx::FleetState;
use crate::module::error::GlueError;
use crate::module::ffi_util::now_ms;
use crate::module::log::rg_log;
use crate::module::req::Req;

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

/// A request waiting for its admission's reply.
struct Waiter {
    r: *mut ngx_http_request_t,
    /// The cleanup in the request's pool that detaches it; disarmed when it is woken.
    cln: *mut ngx_pool_cleanup_t,
    id: u64,
}

/// What one reply on the link answers.
enum Awaited {
    Ack,
    /// An admission; no waiter once its request ended.
    Verdict(Asked, Option<Waiter>),
}

/// A reply owed, and when its command was queued: each is due within the timeout of that.
struct Owed {
    at: ngx_msec_t,
    what: Awaited,
}

impl Owed {
    fn expect(&self) -> Expect {
        match &self.what {
            Awaited::Ack => Expect::Ack,
            Awaited::Verdict(asked, _) => Expect::Verdict(*asked),
        }
    }
}

/// nginx's cached clock (updated once per turn of the event loop), in ms.
fn now_msec() -> ngx_msec_t {
    // SAFETY: nginx's clock, written only by this worker's thread between handlers.
    unsafe { ngx_current_msec }
}

/// What a request's pool cleanup needs to find its waiter.
struct Detach {
    link: *mut Link,
    id: u64,
}

static NEXT_WAITER: AtomicU64 = AtomicU64::new(1);

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
    /// What each reply owed for what was queued or written answers, oldest first.
    owed: VecDeque<Owed>,
    /// When the reply timer fires (0: not armed): the oldest owed reply's due time.
    due: ngx_msec_t,
    /// Admissions answered (or failed), handed to their requests by `tick`.
    woken: VecDeque<(Waiter, FleetState)>,
    /// Posted to write what was queued and wake what was answered, once per turn of nginx's
    /// event loop.
    tick: ngx_event_t,
}

/// A link's address; `Send` so the list can be a plain static (nginx runs one thread per
/// worker: the mutex is never contended, it only satisfies the type system).
struct LinkPtr(*mut Link);
// SAFETY: links are only touched from the worker's one thread.
unsafe impl Send for LinkPtr {}

/// This worker's links (one per server it talked to), removed only at its exit
/// ([`release_all`]), so the pointers the connections' `data`, the posted events and the
/// requests' cleanups hold stay valid while anything can use them.
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
        owed: VecDeque::new(),
        due: 0,
        woken: VecDeque::new(),
        // SAFETY: all-zero is an idle event; the fields it needs are set below.
        tick: unsafe { core::mem::zeroed() },
    });
    let l = Box::into_raw(link);
    // SAFETY: l is the leaked box just made; ngx_cycle is this worker's live cycle, whose
    // log outlives the link's use of it.
    unsafe {
        (*l).tick.handler = Some(on_tick);
        (*l).tick.data = l.cast::<c_void>();
        (*l).tick.log = (*ngx_cycle).log;
    }
    links.push(LinkPtr(l));
    Some(l)
}

/// At the worker's exit (`exit_process`): closes and frees every link. nginx unloads the
/// module right after, and what only the unmapped static pointed at would then be a leak.
/// Nothing of a link runs after this: the process exits without running another event, and no
/// request pool (whose cleanup would look for its link) is destroyed in between.
pub fn release_all() {
    let mut links = LINKS.lock().unwrap_or_else(|e| e.into_inner());
    for l in links.drain(..) {
        // SAFETY: a box leaked by link_for, taken out of the list once here; per the above, no
        // event or cleanup refers to it again.
        let mut link = unsafe { Box::from_raw(l.0) };
        if link.tick.posted() != 0 {
            // SAFETY: the link's own event, in this worker's posted queue.
            unsafe { ngx_delete_posted_event(&mut link.tick) };
        }
        close(&mut link);
    }
    *links = Vec::new();
}

/// Queues `command` (drawing `replies` acknowledgements) for the server at `addr`; `conf`
/// makes the link's settings if this worker has no link there yet.
pub fn send(addr: &PeerAddr, conf: impl FnOnce() -> LinkConf, command: &[u8], replies: u64) {
    if let Some(l) = link_for(addr, Some(conf)) {
        queue_acks(l, command, replies);
    }
}

/// As [`send`], only to a link this worker already has (renewals, which no request carries:
/// the request that took the slot made the link); false if there is none.
pub fn send_if_linked(addr: &PeerAddr, command: &[u8], replies: u64) -> bool {
    let Some(l) = link_for::<fn() -> LinkConf>(addr, None) else {
        return false;
    };
    queue_acks(l, command, replies);
    true
}

fn queue_acks(l: *mut Link, command: &[u8], replies: u64) {
    if !queue(l, command, (0..replies).map(|_| Awaited::Ack)) {
        // SAFETY: as in `queue`: a live link, and no other reference to it while this runs.
        let link = unsafe { &*l };
        count(link, FleetFailure::Timeout, replies);
        warn(link, "too much is waiting for it");
    }
}

/// Whether [`ask`] queued the admission.
pub enum Queued {
    /// The request waits; `tick` runs it again.
    Yes,
    /// The link holds too much already (Redis is not keeping up, or away): the request gets
    /// the failure policy at once.
    Full,
}

/// Queues an admission for `req`, whose access handler then waits: its state is settled and
/// its phase engine run again from `tick` (never from inside this call).
pub fn ask(
    addr: &PeerAddr,
    conf: impl FnOnce() -> LinkConf,
    command: &[u8],
    asked: Asked,
    req: Req<'_>,
) -> Result<Queued, GlueError> {
    let Some(l) = link_for(addr, Some(conf)) else {
        return Ok(Queued::Full);
    };
    // SAFETY: the live request's pool; the cleanup's data is ours, sized for a Detach.
    let cln = unsafe { ngx_pool_cleanup_add(req.pool(), core::mem::size_of::<Detach>()) };
    // SAFETY: null or a fresh cleanup whose data points at room for a Detach.
    let Some(c) = (unsafe { cln.as_mut() }) else {
        return Err(GlueError::NoMemory);
    };
    let id = NEXT_WAITER.fetch_add(1, Relaxed);
    // SAFETY: c.data is room for one Detach (the size asked above), suitably aligned (pool
    // memory is aligned for any scalar).
    unsafe { c.data.cast::<Detach>().write(Detach { link: l, id }) };
    c.handler = Some(detach);
    let waiter = Waiter {
        r: req.as_ptr(),
        cln,
        id,
    };
    if queue(l, command, [Awaited::Verdict(asked, Some(waiter))]) {
        return Ok(Queued::Yes);
    }
    c.handler = None;
    // SAFETY: as in `queue`: a live link, and no other reference to it while this runs.
    warn(unsafe { &*l }, "too much is waiting for it");
    Ok(Queued::Full)
}

/// The request's pool is going: its reply, when it comes, is read and dropped.
unsafe extern "C" fn detach(data: *mut c_void) {
    // SAFETY: nginx calls the cleanup with the data `ask` wrote; the link is a leaked box.
    let d = unsafe { &*data.cast::<Detach>() };
    // SAFETY: as in `queue`: nginx runs one handler at a time in this worker, and a pool is
    // destroyed only from a request's handlers, never while this file holds the link.
    let link = unsafe { &mut *d.link };
    for o in &mut link.owed {
        if let Awaited::Verdict(_, w) = &mut o.what {
            if w.as_ref().is_some_and(|w| w.id == d.id) {
                *w = None;
                return;
            }
        }
    }
    link.woken.retain(|(w, _)| w.id != d.id);
}

/// `l` is a link from [`link_for`]. False (nothing queued) past [`MAX_QUEUED`].
fn queue(l: *mut Link, command: &[u8], owed: impl IntoIterator<Item = Awaited>) -> bool {
    // SAFETY: link_for's links are leaked boxes, live for the process; nginx runs one handler
    // at a time in this worker, so this is the only reference while it runs.
    let link = unsafe { &mut *l };
    if link.out.len() + command.len() > MAX_QUEUED {
        return false;
    }
    link.out.extend_from_slice(command);
    let at = now_msec();
    link.owed
        .extend(owed.into_iter().map(|what| Owed { at, what }));
    if link.conn.is_null() {
        connect(link);
    } else if link.connected {
        post_tick(link);
    }
    true
}

fn post_tick(link: &mut Link) {
    // SAFETY: the link's own event (live for the process, its handler, data and log set in
    // link_for) onto this worker's posted-events queue, which nginx runs after the turn's
    // other events.
    unsafe { ngx_post_event(&mut link.tick, ptr::addr_of_mut!(ngx_posted_events)) };
}

/// Writes what this turn queued, then hands the answered admissions to their requests.
unsafe extern "C" fn on_tick(ev: *mut ngx_event_t) {
    // SAFETY: the event's data is its link, a leaked box (link_for).
    let l = unsafe { (*ev).data.cast::<Link>() };
    {
        // SAFETY: as in `queue`; this reference ends before any request runs.
        let link = unsafe { &mut *l };
        if link.connected && !link.out.is_empty() {
            flush(link);
        }
    }
    loop {
        // One at a time, no reference to the link kept: a request run here may queue on
        // this link, or end and detach another waiter.
        // SAFETY: as above.
        let next = unsafe { (*l).woken.pop_front() };
        let Some((w, state)) = next else {
            break;
        };
        // SAFETY: a waiter still in the list belongs to a live request (its pool cleanup,
        // which would have removed it, has not run): disarm the cleanup, then run it.
        unsafe {
            (*w.cln).handler = None;
            wait::deliver(w.r, state, (*l).addr);
        }
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
        link.owed.push_front(Owed {
            at: now_msec(),
            what: Awaited::Ack,
        });
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
        fail(link, FleetFailure::Connect, "cannot connect");
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
            fail(link, FleetFailure::Connect, "the connection failed");
            return;
        }
        // Each turn's write is a whole batch: Nagle would hold it until the previous one's
        // reply acknowledged it, adding a round trip (as nginx's upstreams, `tcp_nodelay on`;
        // a no-op on a unix socket). A failure is logged by nginx and costs only latency.
        let _ = ngx_tcp_nodelay(link.conn);
    }
    flush(link);
}

fn flush(link: &mut Link) {
    let c = link.conn;
    while !link.out.is_empty() {
        // SAFETY: reads the live connection's send function pointer.
        let Some(send) = (unsafe { (*c).send }) else {
            fail(link, FleetFailure::Connect, "the connection failed");
            return;
        };
        // SAFETY: the live connection; send reads at most len bytes from out.
        let n = unsafe { send(c, link.out.as_mut_ptr(), link.out.len()) };
        if n > 0 {
            link.out.drain(..n as usize);
        } else if n == ngx::ffi::NGX_AGAIN as isize {
            // SAFETY: the live connection's write event.
            if unsafe { ngx_handle_write_event((*c).write, 0) } != 0 {
                fail(link, FleetFailure::Connect, "the connection failed");
                return;
            }
            break;
        } else {
            fail(link, FleetFailure::Connect, "the connection failed");
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
    if link.owed.is_empty() && unsafe { ngx_exiting } != 0 {
        close(link);
        return;
    }
    let c = link.conn;
    let due = link
        .owed
        .front()
        .map_or(0, |o| o.at + link.conf.timeout_ms as ngx_msec_t);
    if due == link.due {
        return;
    }
    link.due = due;
    // SAFETY: the live connection and its read event. Deleted first: nginx keeps a timer
    // that moves by less than 300 ms (NGX_TIMER_LAZY_DELAY), which would leave it at the
    // first command's due time while later ones are answered.
    unsafe {
        (*c).set_idle(u32::from(due == 0));
        if (*(*c).read).timer_set() != 0 {
            ngx_del_timer((*c).read);
        }
        if due != 0 {
            ngx_add_timer((*c).read, due.saturating_sub(now_msec()).max(1));
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
        let (why, detail) = if link.connected {
            (FleetFailure::Timeout, "cannot send in time")
        } else {
            (FleetFailure::Connect, "the connect timed out")
        };
        fail(link, why, detail);
        return;
    }
    if !link.connected {
        if connect_error(link.conn) {
            fail(link, FleetFailure::Connect, "cannot connect");
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
    // SAFETY: the live connection: `close` is nginx closing idle connections at shutdown,
    // or every connection when worker_shutdown_timeout expires.
    if unsafe { (*c).close() } != 0 {
        if link.owed.is_empty() {
            close(link);
        } else {
            // Waiting requests must still be run: an HTTP/2 stream is not terminated by the
            // shutdown timer (its connection waits for it), and would never finish.
            fail(
                link,
                FleetFailure::Connect,
                "closed at the worker's shutdown",
            );
        }
        return;
    }
    // SAFETY: the live event.
    if unsafe { (*ev).timedout() } != 0 {
        fail(link, FleetFailure::Timeout, "no answer in time");
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads the live connection's recv function pointer.
        let Some(recv) = (unsafe { (*c).recv }) else {
            fail(link, FleetFailure::Connect, "the connection failed");
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
        if !link.owed.is_empty() {
            fail(link, FleetFailure::Connect, "the connection closed");
        } else {
            close(link);
        }
        return;
    }
    // SAFETY: the live connection's read event.
    if unsafe { ngx_handle_read_event(ev, 0) } != 0 {
        fail(link, FleetFailure::Connect, "the connection failed");
        return;
    }
    arm_reply_timer(link);
}

/// Reads every complete reply; false when the link failed (and is closed).
fn take_replies(link: &mut Link) -> bool {
    let mut refused = 0;
    let woken = link.woken.len();
    // Consumed bytes go in one drain at the end: a read can hold hundreds of replies.
    let mut pos = 0;
    while pos < link.unread.len() {
        let Some(expect) = link.owed.front().map(Owed::expect) else {
            // Bytes nothing asked for.
            fail(link, FleetFailure::Protocol, "a reply to no command");
            return false;
        };
        let (answer, used) = match read_next(&link.unread[pos..], expect) {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => {
                fail(link, FleetFailure::Protocol, &e.to_string());
                return false;
            }
        };
        pos += used;
        let Some(owed) = link.owed.pop_front() else {
            break;
        };
        if let Answer::Refused(text) = &answer {
            refused += 1;
            if refused == 1 {
                warn(link, &format!("answered \"{text}\""));
            }
        }
        match (owed.what, answer) {
            (Awaited::Ack, Answer::Refused(_)) => count(link, FleetFailure::ErrorReply, 1),
            (Awaited::Ack, _) => {}
            (Awaited::Verdict(_, w), answer) => {
                let state = match answer {
                    Answer::Verdict(v) => FleetState::Answered(v),
                    Answer::Refused(_) => FleetState::Failed(FleetFailure::ErrorReply),
                    // read_next gives a verdict's reply a verdict or a refusal; anything else
                    // must still end the wait.
                    Answer::Done => FleetState::Failed(FleetFailure::Protocol),
                };
                if let Some(w) = w {
                    link.woken.push_back((w, state));
                }
            }
        }
    }
    link.unread.drain(..pos);
    if link.woken.len() > woken {
        post_tick(link);
    }
    if link.unread.len() > MAX_UNREAD {
        fail(link, FleetFailure::Protocol, "a reply too long");
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

/// Everything owed is lost: acknowledged commands are counted, waiting admissions get the
/// failure policy (from `tick`); the connection goes and the next command opens a new one.
fn fail(link: &mut Link, why: FleetFailure, detail: &str) {
    let (mut acks, mut asks) = (0, 0);
    while let Some(o) = link.owed.pop_front() {
        match o.what {
            Awaited::Ack => acks += 1,
            Awaited::Verdict(_, w) => {
                asks += 1;
                if let Some(w) = w {
                    link.woken.push_back((w, FleetState::Failed(why)));
                }
            }
        }
    }
    if acks > 0 {
        count(link, why, acks);
    }
    if acks + asks > 0 {
        warn(
            link,
            &format!(
                "{} ({detail}): {asks} admission(s) get the failure policy, {acks} other command(s) lost (slots come back when their lease ends, tokens are not charged again)",
                why.as_str()
            ),
        );
    }
    if !link.woken.is_empty() {
        post_tick(link);
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
    link.owed.clear();
    link.due = 0;
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
