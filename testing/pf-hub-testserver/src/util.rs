//! Errors shaped like the Hub's, hashing, percent-decoding and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ring::digest;
use serde_json::json;

/// An error answered the way the Hub does: JSON `{"error": msg}` plus the
/// `X-Error-Message` / `X-Error-Code` headers `hf_raise_for_status` reads.
#[derive(Debug)]
pub(crate) struct HubError {
    pub status: StatusCode,
    pub code: Option<&'static str>,
    pub msg: String,
}

pub(crate) type HubResult<T = Response> = Result<T, HubError>;

/// A 200 JSON response.
pub(crate) fn ok_json(v: serde_json::Value) -> HubResult {
    Ok(axum::Json(v).into_response())
}

impl HubError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        HubError {
            status,
            code: None,
            msg: msg.into(),
        }
    }
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn coded(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        HubError {
            status,
            code: Some(code),
            msg: msg.into(),
        }
    }
    pub fn entry_not_found(path: &str) -> Self {
        Self::coded(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            format!("Entry not found: {path}"),
        )
    }
    pub fn revision_not_found(rev: &str) -> Self {
        Self::coded(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            format!("Invalid rev id: {rev}"),
        )
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(json!({ "error": self.msg }))).into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.msg.replace(['\r', '\n'], " ")) {
            h.insert("x-error-message", v);
        }
        if let Some(code) = self.code {
            h.insert("x-error-code", HeaderValue::from_static(code));
        }
        r
    }
}

/// Lowercase hex sha256.
pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b))
}

/// Lowercase hex sha1 (git object ids).
pub(crate) fn sha1_hex(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b))
}

/// The git blob id of `content` (`sha1("blob <len>\0" + content)`).
pub(crate) fn git_blob_oid(content: &[u8]) -> String {
    let mut c = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    c.update(format!("blob {}\0", content.len()).as_bytes());
    c.update(content);
    hex::encode(c.finish())
}

/// `true` for 64 lowercase hex digits (an LFS sha256 oid).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `true` for 40 lowercase hex digits (a commit id).
pub(crate) fn is_commit_id(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Percent-decodes a URL path segment; `None` on bad escapes or non-UTF-8.
pub(crate) fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters (and `/` if `keep_slash`).
pub(crate) fn pct_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Now as an ISO 8601 UTC timestamp with milliseconds (`2024-01-02T03:04:05.000Z`).
pub(crate) fn now_iso() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_oid_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn percent_round_trip() {
        assert_eq!(pct_decode("refs%2Fpr%2F1").as_deref(), Some("refs/pr/1"));
        assert_eq!(pct_decode("%zz"), None);
        assert_eq!(pct_encode("a b/c", true), "a%20b/c");
        assert!(now_iso().ends_with('Z'));
    }
}
