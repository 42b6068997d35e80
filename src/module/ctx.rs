//! The per-request context: what the access handler decided, what the filters saw, and what
//! the LOG handlers and variables read back.
//!
//! # The aliasing rule
//! nginx re-enters the module while it runs: reading the body can call `body_read` before
//! `ngx_http_read_client_request_body` returns; sending a rejection runs our header and body
//! filters inside `reject`. Each of those looks the context up again. So **no `&mut ReqCtx`
//! exists, ever**: lookups hand out `&ReqCtx`, and every field that changes after creation is
//! a `Cell`, read and written by value (`get`/`set`, or `take` and put back for the stream
//! scanner, which no code path holds across a call into nginx). Two live `&ReqCtx` are fine;
//! a `&mut` to one would be undefined behaviour, and there is no way to get one: the type has
//! no `&mut self` method and the pointer to it never leaves this file.
//!
//! # Lifetimes
//! `ReqCtx<'r>` lives in the request pool and is handed out as `&'r ReqCtx<'r>` for a
//! [`Req<'r>`]. The slices it keeps (the key id, the presented credentials, the signature
//! headers) are `&'r [u8]`, which only `Req<'r>`'s accessors produce: request memory. `Cell`
//! makes the type invariant in `'r`, so a shorter-lived slice cannot be stored in it.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{ngx_int_t, ngx_pool_cleanup_add};
use ngx::http::HttpModule;

use super::fleet::peer::PeerAddr;
use super::req::Req;
use super::Module;
use crate::auth::headers::SignatureHeaders;
use crate::auth::outcome::Outcome;
use crate::fleet::{Asked, FleetFailure, FleetVerdict};
use crate::limits::{KeyLimits, LimitKind, Limits, Rate};
use crate::usage::ResponseScanner;

/// Where the access handler is with this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not judged yet (or the access handler did not run for it).
    Checking,
    /// The signature's headers passed; the body is being read for its hash.
    ReadingBody,
    /// Verified and admitted here; waiting for the fleet's Redis (`fleet.rs`).
    Fleet,
    /// Judged: what the access handler returns if the phase engine runs it again.
    Done(ngx_int_t),
}

/// What the LOG phase charges the response's tokens to: the key's limits (in the location's
/// key ring, which outlives the request) and its block in the zone.
#[derive(Clone, Copy)]
pub struct Charge<'r> {
    pub limits: &'r Limits,
    pub key: KeyLimits,
}

pub struct ReqCtx<'r> {
    access: Cell<Access>,
    outcome: Cell<Option<Outcome>>,
    dry_run: Cell<bool>,
    /// The authenticated (or, on a rejection, the well-formed claimed) key id, in the pool.
    key_id: Cell<&'r [u8]>,
    /// The Bearer token and x-api-key the request presented, once the access handler has
    /// looked: redaction masks them wherever else they appear.
    presented: Cell<Option<[&'r [u8]; 2]>>,
    /// The signature headers as parsed before the body was read, for `body_read`.
    signature: Cell<Option<SignatureHeaders<'r>>>,
    /// Set by the header filter for responses it watches (SSE, JSON); fed by the body filter.
    scanner: Cell<Option<ResponseScanner>>,
    /// The limit that refused the request (or would have, in dry run).
    limited: Cell<Option<LimitKind>>,
    /// Set when the key has limits and the request was relayed; taken once at the LOG phase.
    charge: Cell<Option<Charge<'r>>>,
    /// The fleet check this request waits for, settled from the worker's link.
    fleet: Cell<Option<FleetCall<'r>>>,
}

/// The one Redis round trip of a request in a fleet, from the access handler to the answer,
/// and what the LOG phase settles with the same server afterwards.
#[derive(Clone, Copy)]
pub struct FleetCall<'r> {
    /// Which command was sent, so which reply to read.
    pub asked: Asked,
    pub started: std::time::Instant,
    /// The key's rate when Redis counts it, for the 429 and the local fallback.
    pub rate: Option<(Rate, KeyLimits)>,
    /// The key's limits, when Redis checks its concurrency or budgets (for their 429s).
    pub limits: Option<(&'r Limits, KeyLimits)>,
    /// This request's member in the key's slot set, when one was asked for.
    pub member: Option<[u8; 16]>,
    /// The server that answered: the settlement and renewals go to it.
    pub peer: Option<PeerAddr>,
    /// The slot the fleet gave, in this worker's renewal list (`fleet/held.rs`).
    pub held: Option<u64>,
    pub state: FleetState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetState {
    Pending,
    Answered(FleetVerdict),
    Failed(FleetFailure),
}

impl<'r> ReqCtx<'r> {
    fn new() -> Self {
        ReqCtx {
            access: Cell::new(Access::Checking),
            outcome: Cell::new(None),
            dry_run: Cell::new(false),
            key_id: Cell::new(&[]),
            presented: Cell::new(None),
            signature: Cell::new(None),
            scanner: Cell::new(None),
            limited: Cell::new(None),
            charge: Cell::new(None),
            fleet: Cell::new(None),
        }
    }

    pub fn access(&self) -> Access {
        self.access.get()
    }
    pub fn set_access(&self, a: Access) {
        self.access.set(a);
    }
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.get()
    }
    pub fn set_outcome(&self, o: Outcome) {
        self.outcome.set(Some(o));
    }
    pub fn dry_run(&self) -> bool {
        self.dry_run.get()
    }
    pub fn set_dry_run(&self, d: bool) {
        self.dry_run.set(d);
    }
    pub fn key_id(&self) -> &'r [u8] {
        self.key_id.get()
    }
    pub fn set_key_id(&self, k: &'r [u8]) {
        self.key_id.set(k);
    }
    pub fn presented(&self) -> Option<[&'r [u8]; 2]> {
        self.presented.get()
    }
    pub fn set_presented(&self, p: [&'r [u8]; 2]) {
        self.presented.set(Some(p));
    }
    /// The signature headers parked while the body is read; taken once by `body_read`.
    pub fn take_signature(&self) -> Option<SignatureHeaders<'r>> {
        self.signature.take()
    }
    pub fn park_signature(&self, h: SignatureHeaders<'r>) {
        self.signature.set(Some(h));
    }

    pub fn limited(&self) -> Option<LimitKind> {
        self.limited.get()
    }
    pub fn set_limited(&self, k: LimitKind) {
        self.limited.set(Some(k));
    }
    pub fn set_charge(&self, c: Charge<'r>) {
        self.charge.set(Some(c));
    }
    pub fn take_charge(&self) -> Option<Charge<'r>> {
        self.charge.take()
    }
    pub fn fleet(&self) -> Option<FleetCall<'r>> {
        self.fleet.get()
    }
    pub fn set_fleet(&self, c: FleetCall<'r>) {
        self.fleet.set(Some(c));
    }
    /// The call, for the LOG phase's settlement: taken once, so it is settled once.
    pub fn take_fleet(&self) -> Option<FleetCall<'r>> {
        self.fleet.take()
    }
    /// Records Redis's answer (or its failure) and the server asked, once: a call already
    /// settled keeps its state.
    pub fn settle_fleet_from(&self, state: FleetState, peer: Option<PeerAddr>) {
        if let Some(c) = self.fleet.get().filter(|c| c.state == FleetState::Pending) {
            self.fleet.set(Some(FleetCall { state, peer, ..c }));
        }
    }

    pub fn start_scan(&self, s: ResponseScanner) {
        self.scanner.set(Some(s));
    }
    /// Runs `f` on the response scanner, if this response is watched. `f` must not call into
    /// nginx (it only scans bytes): the scanner is out of its cell while `f` runs.
    pub fn with_scanner<T>(&self, f: impl FnOnce(&mut ResponseScanner) -> T) -> Option<T> {
        let mut s = self.scanner.take()?;
        let v = f(&mut s);
        self.scanner.set(Some(s));
        Some(v)
    }
}

/// The request's context, if one was made.
pub fn get<'r>(req: Req<'r>) -> Option<&'r ReqCtx<'r>> {
    let slot = slot(req);
    // SAFETY: our ctx slot holds null or a ReqCtx written by create() in this request's pool,
    // alive as long as the request; only shared references are ever made from it.
    let found = unsafe { (*slot as *const ReqCtx<'r>).as_ref() };
    if found.is_some() || !req.redirected() {
        return found;
    }
    recover(req, slot)
}

/// The request's context, made if the access handler did not run (e.g. `relay_guard off`).
/// `None` only when the pool is exhausted.
pub fn get_or_create<'r>(req: Req<'r>) -> Option<&'r ReqCtx<'r>> {
    get(req).or_else(|| create(req))
}

fn slot(req: Req<'_>) -> *mut *mut c_void {
    // SAFETY: r->ctx has one slot per http module; ctx_index is ours, set by nginx before any
    // request exists.
    unsafe { (*req.as_ptr()).ctx.add(Module::module().ctx_index) }
}

/// Marks our context in the request pool's cleanup list; there is nothing to free. The body
/// touches a static of its own so the linker can never fold it with another empty function.
unsafe extern "C" fn ctx_marker(_: *mut c_void) {
    static TAG: u8 = 0;
    core::hint::black_box(&TAG);
}

/// An internal redirect (error_page, try_files, a named location) zeroes every module's
/// context; the request pool's cleanup list still holds ours (the technique
/// ngx_http_realip_module uses). Without this a signed request redirected to an error_page
/// would be checked again and refused as a replay.
fn recover<'r>(req: Req<'r>, slot: *mut *mut c_void) -> Option<&'r ReqCtx<'r>> {
    let ours: unsafe extern "C" fn(*mut c_void) = ctx_marker;
    // SAFETY: the pool's cleanup list is a null-terminated list of live entries.
    let mut cln = unsafe { (*req.pool()).cleanup };
    // SAFETY: cln is null or a live entry of that list (the loop only follows `next`).
    while let Some(c) = unsafe { cln.as_ref() } {
        if c.handler.is_some_and(|h| core::ptr::fn_addr_eq(h, ours)) {
            // SAFETY: an entry marked by ctx_marker holds the ReqCtx create() wrote.
            unsafe { *slot = c.data };
            // SAFETY: as in get().
            return unsafe { (c.data as *const ReqCtx<'r>).as_ref() };
        }
        cln = c.next;
    }
    None
}

// The context lives in memory from ngx_palloc, aligned to NGX_ALIGNMENT (an unsigned long).
const _: () =
    assert!(core::mem::align_of::<ReqCtx<'static>>() <= core::mem::align_of::<libc::c_ulong>());

fn create<'r>(req: Req<'r>) -> Option<&'r ReqCtx<'r>> {
    let size = core::mem::size_of::<ReqCtx<'r>>();
    // SAFETY: the request pool is live; the entry's data is allocated there with ngx_palloc,
    // aligned for ReqCtx (checked above; ngx_pnalloc would not align it).
    let cln = unsafe { ngx_pool_cleanup_add(req.pool(), size).as_mut() }?;
    let p = cln.data as *mut ReqCtx<'r>;
    // SAFETY: p is `size` fresh bytes of the request pool, aligned for ReqCtx; ReqCtx owns
    // nothing that needs dropping (the pool frees it whole).
    unsafe { ptr::write(p, ReqCtx::new()) };
    cln.handler = Some(ctx_marker);
    // SAFETY: our ctx slot; see slot().
    unsafe { *slot(req) = p as *mut c_void };
    // SAFETY: just written; shared references only, as everywhere.
    unsafe { p.as_ref() }
}

const _: () = assert!(!core::mem::needs_drop::<ReqCtx<'static>>());
