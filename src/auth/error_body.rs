//! Error bodies in the Anthropic API's shape, so the official SDKs surface our rejections the
//! same way they surface Anthropic's own (`AuthenticationError`, `OverloadedError`, ...).

use serde::Serialize;

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// `{"type":"error","error":{"type":<error_type>,"message":<message>}}`, JSON-escaped.
pub fn render(error_type: &str, message: &str) -> Vec<u8> {
    let body = Body {
        kind: "error",
        error: Inner {
            kind: error_type,
            message,
        },
    };
    // Serializing two &str fields cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_vec()
    })
}

/// The Anthropic error type for an HTTP status the relay itself produces.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 414 | 431 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_escaping() {
        let b = render("authentication_error", "bad \"X-Nonce\"\n");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "bad \"X-Nonce\"\n");
    }

    #[test]
    fn status_mapping() {
        assert_eq!(error_type_for_status(401), "authentication_error");
        assert_eq!(error_type_for_status(503), "overloaded_error");
        assert_eq!(error_type_for_status(502), "api_error");
    }
}
