//! Twirp error values and the texts the real server answers with.

use std::collections::BTreeMap;

/// A Twirp error as written on the wire: `{"code","msg","meta"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwirpError {
    pub code: String,
    pub msg: String,
    pub meta: BTreeMap<String, String>,
}

impl TwirpError {
    pub fn new(code: &str, msg: impl Into<String>) -> Self {
        Self { code: code.to_owned(), msg: msg.into(), meta: BTreeMap::new() }
    }

    pub fn with_meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.meta.insert(key.to_owned(), value.into());
        self
    }

    /// An error the server raises as a psrpc error (`psrpc.NewErrorf`, e.g.
    /// `ErrRoomNotFound`). livekit-server's `xtwirp.ServerPassErrorDetails`
    /// interceptor turns those into `twirp.NewError(Unknown, err.Error())`,
    /// then re-codes them from their gRPC status with
    /// `twirp.NewError(code, dst.Error())`, and `twirp.Error.Error()` is
    /// `"twirp error unknown: " + msg`. So the code is right but the message
    /// carries that prefix (protocol `utils/xtwirp/errors.go`, twirp
    /// `errors.go`).
    pub fn psrpc(code: &str, msg: &str) -> Self {
        Self::new(code, format!("twirp error unknown: {msg}"))
    }

    /// `twirp.InvalidArgumentError(argument, validationMsg)`: the message is
    /// both joined by a space, and `argument` goes to the `argument` meta.
    pub fn invalid_argument(argument: &str, validation: &str) -> Self {
        Self::new("invalid_argument", format!("{argument} {validation}")).with_meta("argument", argument)
    }

    /// `badRouteError` in the generated Twirp server.
    pub fn bad_route(msg: impl Into<String>, method: &str, path: &str) -> Self {
        Self::new("bad_route", msg).with_meta("twirp_invalid_route", format!("{method} {path}"))
    }

    pub fn malformed(msg: &str) -> Self {
        Self::new("malformed", msg)
    }

    /// `twirpAuthError(ErrPermissionDenied)` in `pkg/service/auth.go`.
    pub fn permission_denied() -> Self {
        Self::new("unauthenticated", "permissions denied")
    }

    pub fn room_not_found() -> Self {
        Self::psrpc("not_found", "requested room does not exist")
    }

    pub fn participant_not_found() -> Self {
        Self::psrpc("not_found", "participant does not exist")
    }

    /// HTTP status for the code (`twirp.ServerHTTPStatusFromErrorCode`); an
    /// unknown code is answered as 500.
    pub fn status(&self) -> u16 {
        status_for_code(&self.code)
    }

    /// The JSON body, byte for byte what Go's `json.Marshal` of the
    /// generated `twerrJSON` gives: `code`, `msg`, then `meta` only if
    /// non-empty, HTML characters escaped as Go does.
    pub fn body(&self) -> Vec<u8> {
        let mut out = String::from("{\"code\":");
        out.push_str(&go_json_string(&self.code));
        out.push_str(",\"msg\":");
        out.push_str(&go_json_string(&self.msg));
        if !self.meta.is_empty() {
            out.push_str(",\"meta\":{");
            for (i, (k, v)) in self.meta.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&go_json_string(k));
                out.push(':');
                out.push_str(&go_json_string(v));
            }
            out.push('}');
        }
        out.push('}');
        out.into_bytes()
    }
}

/// `twirp.ServerHTTPStatusFromErrorCode`.
pub fn status_for_code(code: &str) -> u16 {
    match code {
        "canceled" => 408,
        "unknown" => 500,
        "invalid_argument" => 400,
        "malformed" => 400,
        "deadline_exceeded" => 408,
        "not_found" => 404,
        "bad_route" => 404,
        "already_exists" => 409,
        "permission_denied" => 403,
        "unauthenticated" => 401,
        "resource_exhausted" => 429,
        "failed_precondition" => 412,
        "aborted" => 409,
        "out_of_range" => 400,
        "unimplemented" => 501,
        "internal" => 500,
        "unavailable" => 503,
        "dataloss" => 500,
        _ => 500,
    }
}

/// A JSON string as Go's encoding/json writes it (`<`, `>`, `&`, U+2028 and
/// U+2029 escaped).
pub(crate) fn go_json_string(s: &str) -> String {
    let plain = serde_json::Value::String(s.to_owned()).to_string();
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_matches_go_json_marshal() {
        let e = TwirpError::bad_route("no handler for path \"/x\"", "POST", "/x");
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"code":"bad_route","msg":"no handler for path \"/x\"","meta":{"twirp_invalid_route":"POST /x"}}"#
        );
        assert_eq!(
            String::from_utf8(TwirpError::new("internal", "a<b").body()).unwrap(),
            r#"{"code":"internal","msg":"a\u003cb"}"#
        );
    }
}
