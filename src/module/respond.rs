//! Responses the module sends itself: rejections from the access phase (Anthropic-shaped JSON,
//! so SDKs raise their usual typed errors, with headers that tell them whether to retry) and
//! the metrics page.

use core::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_discard_request_body,
    ngx_http_output_filter, ngx_http_send_header, ngx_list_push, ngx_str_t, ngx_table_elt_t,
};

use super::req::Req;
use crate::auth::error_body;

fn static_str(s: &'static str) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr() as *mut u8,
    }
}

/// Appends a response header. Names are lowercase static strings; the value is copied into
/// the request pool.
fn push_header(req: Req<'_>, name: &'static str, value: &str) -> bool {
    let Some(value) = req.pool_copy(value.as_bytes()) else {
        return false;
    };
    // SAFETY: the request is live; headers_out.headers is its output header list.
    let h =
        unsafe { ngx_list_push(&mut (*req.as_ptr()).headers_out.headers) } as *mut ngx_table_elt_t;
    if h.is_null() {
        return false;
    }
    // SAFETY: h is a fresh, exclusively owned list element; zeroing it clears fields that exist
    // only in some nginx versions (e.g. `next` since 1.23). nginx only reads the name (static)
    // and the value (in the request pool, which outlives the response).
    unsafe {
        ptr::write_bytes(h, 0, 1);
        (*h).hash = 1;
        (*h).key = static_str(name);
        (*h).value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr() as *mut u8,
        };
        (*h).lowcase_key = name.as_ptr() as *mut u8;
    }
    true
}

/// Sends `status` with an Anthropic error body. Returns what a content handler would return;
/// the caller finalizes the request with it. Only for a main request whose response has not
/// started (the access phase).
pub fn send_error(req: Req<'_>, status: u16, message: &str) -> Status {
    let body = error_body::render(error_body::error_type_for_status(status), message);
    let headers: &[(&'static str, &str)] = if status == 503 {
        // The store frees up as nonces age out: a prompt retry usually succeeds.
        &[("retry-after", "1"), ("x-should-retry", "true")]
    } else {
        // The official SDKs honour this and do not retry a request that cannot succeed.
        &[("x-should-retry", "false")]
    };
    send_body(req, status, "application/json", &body, headers)
}

/// Sends the 429 of a refusing limit: `rate_limit_error`, the real wait in `retry-after`, and
/// `x-should-retry` saying whether that wait is worth a client's automatic retry.
pub fn send_limited(req: Req<'_>, refusal: &crate::limits::Refusal, message: &str) -> Status {
    let body = error_body::render("rate_limit_error", message);
    let retry_after = refusal.retry_after_s.to_string();
    let should_retry = if refusal.should_retry() {
        "true"
    } else {
        "false"
    };
    send_body(
        req,
        429,
        "application/json",
        &body,
        &[
            ("retry-after", &retry_after),
            ("x-should-retry", should_retry),
        ],
    )
}

/// Sends a complete response from the module (status, type, extra headers, body copied into
/// the request pool). Returns what a content handler would return. Only for a main request
/// whose response has not started.
pub fn send_body(
    req: Req<'_>,
    status: u16,
    content_type: &'static str,
    body: &[u8],
    headers: &[(&'static str, &str)],
) -> Status {
    let r = req.as_ptr();
    // A body that was never read must be drained, or on a keep-alive connection it would be
    // parsed as the next request.
    // SAFETY: the live request.
    let rc = Status(unsafe { ngx_http_discard_request_body(r) });
    if rc != Status::NGX_OK {
        return rc;
    }
    // SAFETY: the live request's output headers, not yet sent; the strings are static.
    unsafe {
        let out = &mut (*r).headers_out;
        out.status = status as usize;
        out.content_type = static_str(content_type);
        out.content_type_len = out.content_type.len;
        out.content_length_n = body.len() as i64;
    }
    for &(name, value) in headers {
        if !push_header(req, name, value) {
            return Status::NGX_ERROR;
        }
    }
    // SAFETY: the live request, its headers set above.
    let rc = Status(unsafe { ngx_http_send_header(r) });
    // SAFETY: the live request.
    let header_only = unsafe { (*r).header_only() } != 0;
    if rc == Status::NGX_ERROR || rc > Status::NGX_OK || header_only {
        return rc;
    }
    // SAFETY: the request pool is live; the buffer is fresh and `body.len()` bytes long.
    let b: *mut ngx_buf_t = unsafe { ngx_create_temp_buf(req.pool(), body.len().max(1)) };
    if b.is_null() {
        return Status::NGX_ERROR;
    }
    // SAFETY: b has room for the body at `last`; it is ours until passed to the filters.
    unsafe {
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
    }
    let mut chain = ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    // SAFETY: the live request and a chain of one complete buffer; the filters copy what they
    // keep of the link before returning.
    Status(unsafe { ngx_http_output_filter(r, &mut chain) })
}
