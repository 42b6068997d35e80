//! The fleet-wide concurrency slots this worker's requests hold, and their renewal: a slot in
//! Redis is a lease, so a host that dies gives its slots back when they expire; a request
//! that runs longer than a lease keeps its slot because its worker renews every held slot
//! each third of a lease (one command per server, on the worker's link).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use ngx::ffi::{ngx_add_timer, ngx_cycle, ngx_event_t, ngx_msec_t};

use super::link;
use super::peer::PeerAddr;
use crate::fleet::encode_renew;

/// Slots renewed by one command: bounds its size (a script's keys and arguments).
const PER_COMMAND: usize = 64;

struct Held {
    id: u64,
    peer: PeerAddr,
    set: String,
    member: String,
}

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
    static LEASE_MS: Cell<u64> = const { Cell::new(0) };
}

/// The renewal timer, made once per worker (null until then). A static, not a thread-local,
/// so the leaked event stays reachable at exit.
static TIMER: AtomicPtr<ngx_event_t> = AtomicPtr::new(core::ptr::null_mut());

/// A slot the fleet gave a request; the id is what [`release`] takes back.
pub fn hold(peer: PeerAddr, set: String, member: String, lease_ms: u64) -> u64 {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id.wrapping_add(1));
        id
    });
    LEASE_MS.with(|l| l.set(lease_ms));
    HELD.with(|h| {
        h.borrow_mut().push(Held {
            id,
            peer,
            set,
            member,
        })
    });
    arm();
    id
}

/// The slot is no longer renewed (its request is over).
pub fn release(id: u64) {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(i) = h.iter().position(|s| s.id == id) {
            h.swap_remove(i);
        }
    });
}

fn interval_ms() -> u64 {
    (LEASE_MS.with(Cell::get) / 3).max(100)
}

/// Starts the timer if it is not running.
fn arm() {
    let mut ev = TIMER.load(Relaxed);
    if ev.is_null() {
        // SAFETY: all-zero is an idle event; leaked, it lives as long as the process.
        let e: &mut ngx_event_t = Box::leak(Box::new(unsafe { core::mem::zeroed() }));
        e.handler = Some(on_timer);
        e.data = (e as *mut ngx_event_t).cast();
        // SAFETY: this worker's cycle and its log, live for the process.
        e.log = unsafe { (*ngx_cycle).log };
        // Renewals must not hold up a graceful shutdown: the requests they are for do.
        e.set_cancelable(1);
        ev = e;
        TIMER.store(ev, Relaxed);
    }
    // SAFETY: the worker's own timer event, live for the process.
    if unsafe { (*ev).timer_set() } == 0 {
        // SAFETY: as above; not in the timer tree (checked), so added once.
        unsafe { ngx_add_timer(ev, interval_ms() as ngx_msec_t) };
    }
}

unsafe extern "C" fn on_timer(_: *mut ngx_event_t) {
    let by_peer = HELD.with(|h| {
        let h = h.borrow();
        let mut groups: Vec<(PeerAddr, Vec<(String, String)>)> = Vec::new();
        for s in h.iter() {
            let pair = (s.set.clone(), s.member.clone());
            match groups.iter_mut().find(|(p, _)| *p == s.peer) {
                Some((_, v)) => v.push(pair),
                None => groups.push((s.peer, vec![pair])),
            }
        }
        groups
    });
    let lease = LEASE_MS.with(Cell::get);
    for (peer, slots) in &by_peer {
        for chunk in slots.chunks(PER_COMMAND) {
            let pairs: Vec<(&str, &str)> = chunk
                .iter()
                .map(|(s, m)| (s.as_str(), m.as_str()))
                .collect();
            let mut bytes = Vec::new();
            encode_renew(&mut bytes, lease, &pairs);
            if !link::send_if_linked(peer, &bytes, 1) {
                break;
            }
        }
    }
    // Also while the worker shuts down gracefully: its requests still run (the timer is
    // cancelable, so it never keeps the worker alive by itself).
    if !by_peer.is_empty() {
        arm();
    }
}
