//! `Req<'r>`: the request an nginx callback was given, converted once at the entry point.
//!
//! It holds the raw pointer, never a `&mut ngx_http_request_t`: nginx mutates the request in
//! every call we make into it (reading the body, sending a response, running filters) and
//! calls back into us while doing so, so a Rust reference to the whole struct held across such
//! a call would alias nginx's writes. Each accessor dereferences the pointer for the length of
//! one read and returns a copy, or a slice of memory that lives as long as the request.
//!
//! `'r` stands for "as long as this request": everything an accessor hands out with `'r` is
//! request memory (the request line, header values, pool copies) or configuration, which
//! outlives every request. The request context (`ctx.rs`) stores only such slices, and its
//! type makes it impossible to store anything shorter-lived.

use core::marker::PhantomData;
use core::ptr::NonNull;

use ngx::ffi::{ngx_http_request_t, ngx_log_t, ngx_pool_t, ngx_table_elt_t};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};

use super::conf::{LocConf, MainConf};
use super::ffi_util::{for_each_header, pool_copy};
use super::Module;

#[derive(Clone, Copy)]
pub struct Req<'r> {
    raw: NonNull<ngx_http_request_t>,
    _request: PhantomData<&'r ngx_http_request_t>,
}

impl<'r> Req<'r> {
    /// # Safety
    /// `r` is null or the live request nginx passed to the running callback, and `'r` ends
    /// before the request is freed (use a fresh `Req` in each callback).
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Option<Req<'r>> {
        NonNull::new(r).map(|raw| Req {
            raw,
            _request: PhantomData,
        })
    }

    pub fn as_ptr(self) -> *mut ngx_http_request_t {
        self.raw.as_ptr()
    }

    /// The request as nginx's own struct, for a single read. Private: a reference that
    /// escaped would outlive the next call into nginx.
    fn raw(&self) -> &ngx_http_request_t {
        // SAFETY: the request is live for 'r (from_raw's contract), and nothing writes to it
        // while this short borrow of `self` is in use: no call into nginx happens meanwhile.
        unsafe { self.raw.as_ref() }
    }

    fn ngx(&self) -> &Request {
        // SAFETY: Request is a repr(transparent) wrapper of ngx_http_request_t; the borrow is
        // as short as raw()'s.
        unsafe { &*(self.raw.as_ptr() as *const Request) }
    }

    pub fn is_main(self) -> bool {
        core::ptr::eq(self.raw().main, self.raw.as_ptr())
    }

    /// Sent here by an internal redirect (error_page, try_files, a named location), or
    /// finalised by a filter: the cases where nginx has zeroed the module contexts.
    pub fn redirected(self) -> bool {
        let r = self.raw();
        r.internal() != 0 || r.filter_finalize() != 0
    }

    pub fn internal(self) -> bool {
        self.raw().internal() != 0
    }

    pub fn err_status(self) -> usize {
        self.raw().err_status
    }

    /// The status the response carries or will carry (an error_page's status wins).
    pub fn final_status(self) -> usize {
        let r = self.raw();
        if r.err_status != 0 {
            r.err_status
        } else {
            r.headers_out.status
        }
    }

    /// The client's side failed: a send to it failed, or nginx saw it close while the
    /// upstream was still answering (499). Read at the LOG phase to tell a client abort from
    /// an upstream cut.
    pub fn client_gone(self) -> bool {
        let r = self.raw();
        // SAFETY: a live request's connection is live for the request.
        let c_error = unsafe { r.connection.as_ref() }.is_some_and(|c| c.error() != 0);
        c_error || r.headers_out.status == 499 || r.err_status == 499
    }

    pub fn method(self) -> u32 {
        self.raw().method as u32
    }

    pub fn method_name(self) -> &'r [u8] {
        // SAFETY: method_name points into the request line, which lives as long as the request.
        unsafe { bytes_r(&self.raw().method_name) }
    }

    pub fn unparsed_uri(self) -> &'r [u8] {
        // SAFETY: as in method_name.
        unsafe { bytes_r(&self.raw().unparsed_uri) }
    }

    pub fn args(self) -> &'r [u8] {
        // SAFETY: as in method_name (args lie in the request line or a pool copy).
        unsafe { bytes_r(&self.raw().args) }
    }

    /// HTTP/2 and HTTP/3 frame bodies without length headers: a body may follow any request.
    pub fn may_have_body(self) -> bool {
        let r = self.raw();
        r.headers_in.content_length_n > 0 || r.headers_in.chunked() != 0 || r.http_version >= 2000
    }

    /// Calls `f(name, value)` for every request header whose name length `len_ok` accepts, in
    /// order. The length test comes first, before any slice is made: the callers look for a
    /// few names, and one compare rejects most headers.
    pub fn for_each_header_in(
        self,
        len_ok: impl Fn(usize) -> bool,
        mut f: impl FnMut(&'r [u8], &'r [u8]),
    ) {
        let part = &self.raw().headers_in.headers.part as *const _;
        // SAFETY: the request's header list, live for 'r; the elements and the strings they
        // point at live as long as the request.
        unsafe {
            for_each_header(part, |h: &ngx_table_elt_t| {
                if len_ok(h.key.len) {
                    f(bytes_r(&h.key), bytes_r(&h.value))
                }
            })
        };
    }

    /// The Authorization header, which nginx keeps in its own field (it refuses duplicates).
    pub fn authorization(self) -> Option<&'r [u8]> {
        // SAFETY: null or an element of the request's header list, alive for 'r.
        unsafe { self.raw().headers_in.authorization.as_ref() }.map(|h| {
            // SAFETY: header values live as long as the request.
            unsafe { bytes_r(&h.value) }
        })
    }

    pub fn pool(self) -> *mut ngx_pool_t {
        self.raw().pool
    }

    pub fn log(self) -> *mut ngx_log_t {
        // SAFETY: every request has a live connection until it is freed.
        unsafe { (*self.raw().connection).log }
    }

    /// A copy of `v` in the request pool, or `None` when the pool is exhausted.
    pub fn pool_copy(self, v: &[u8]) -> Option<&'r [u8]> {
        // SAFETY: the request pool lives as long as the request.
        let s = unsafe { pool_copy(self.pool(), v) };
        // SAFETY: the copy lives in the request pool.
        (s.len == v.len() && !s.data.is_null()).then(|| unsafe { bytes_r(&s) })
    }

    pub fn loc_conf(self) -> Option<&'r LocConf> {
        Module::location_conf(self.ngx())
    }

    pub fn main_conf(self) -> Option<&'r MainConf> {
        Module::main_conf(self.ngx())
    }
}

/// The bytes of an `ngx_str_t` that lives as long as the request.
///
/// # Safety
/// `s` points at `s.len` bytes of request (or configuration) memory.
unsafe fn bytes_r<'r>(s: &ngx::ffi::ngx_str_t) -> &'r [u8] {
    // SAFETY: the caller's promise.
    unsafe { super::ffi_util::bytes(s) }
}
