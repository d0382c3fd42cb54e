//! One mapping from a failed HTTP response to [`RegistryError`].

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use crate::error::RegistryError;
use crate::retry::parse_retry_after;

/// How much of an error response body is read (the rest is dropped).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// A non-success response, read (bounded) for classification.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Failure {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The first [`MAX_ERROR_BODY`] bytes of the body, lossily decoded.
    pub body: String,
}

impl Failure {
    /// A failure from its parts (for tests and for callers that already read
    /// the body).
    pub fn new(status: StatusCode, headers: HeaderMap, body: impl Into<String>) -> Failure {
        Failure {
            status,
            headers,
            body: body.into(),
        }
    }

    /// Reads status, headers and at most [`MAX_ERROR_BODY`] bytes of body
    /// from `resp`. A body that breaks off is kept as far as it came.
    pub async fn read(resp: reqwest::Response) -> Failure {
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            let room = MAX_ERROR_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        Failure::new(status, headers, String::from_utf8_lossy(&body))
    }

    /// The server's `Retry-After` (seconds), if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }

    /// A header's value as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The class the status alone gives: 401/403 unauthorized, 404 not
    /// found, 409/412 conflict, 408/429/5xx transient, other codes permanent.
    pub fn status_class(&self) -> Class {
        match self.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Class::Unauthorized,
            StatusCode::NOT_FOUND => Class::NotFound,
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Class::Conflict,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Class::Transient,
            s if s.is_server_error() => Class::Transient,
            _ => Class::Permanent,
        }
    }
}

/// What a failed response means, before a backend words the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// The object (or repository) does not exist: [`RegistryError::NotFound`].
    NotFound,
    /// Credentials missing or refused: [`RegistryError::Unauthorized`].
    Unauthorized,
    /// A concurrent change or an object that exists: [`RegistryError::Conflict`].
    Conflict,
    /// Worth another attempt (honouring `Retry-After`).
    Transient,
    /// Retrying will not help.
    Permanent,
}

/// What a backend adds to the shared classification: its name, its
/// credential advice, and what its servers say beyond the status.
pub trait Classify {
    /// The backend and location for transport errors, e.g. `oci host:5000`.
    fn backend(&self) -> String;

    /// The error for 401/403, saying which credentials to set.
    fn unauthorized(&self) -> RegistryError;

    /// A short, secret-free detail from the response (an OCI error code, a
    /// Hub `X-Error-Message`, an IPFS RPC message). Default: the first 200
    /// characters of the body.
    fn detail(&self, failure: &Failure) -> String {
        failure.body.chars().take(200).collect()
    }

    /// Overrides the status class from what the server said; `None` keeps
    /// [`Failure::status_class`].
    fn refine(&self, failure: &Failure, detail: &str) -> Option<Class> {
        let _ = (failure, detail);
        None
    }

    /// The not-found error for `what`.
    fn not_found(&self, what: &str, detail: &str) -> RegistryError {
        let _ = detail;
        RegistryError::not_found(format!("{what} on {}", self.backend()))
    }
}

/// The error for `failure` of the request for `what` (a path or an action,
/// never a URL with credentials), worded by `backend`.
pub fn classify(failure: &Failure, what: &str, backend: &dyn Classify) -> RegistryError {
    let detail = backend.detail(failure);
    let detail = detail.trim();
    let class = backend
        .refine(failure, detail)
        .unwrap_or_else(|| failure.status_class());
    let message = if detail.is_empty() {
        format!("{what}: {}", failure.status)
    } else {
        format!("{what}: {} {detail}", failure.status)
    };
    match class {
        Class::NotFound => backend.not_found(what, detail),
        Class::Unauthorized => backend.unauthorized(),
        Class::Conflict => RegistryError::Conflict(message),
        Class::Transient => {
            RegistryError::transient_after(backend.backend(), message, failure.retry_after())
        }
        Class::Permanent => RegistryError::permanent(backend.backend(), message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    struct Plain;
    impl Classify for Plain {
        fn backend(&self) -> String {
            "test host".into()
        }
        fn unauthorized(&self) -> RegistryError {
            RegistryError::Unauthorized {
                registry: "host".into(),
                detail: "set TOKEN".into(),
            }
        }
    }

    struct Coded;
    impl Classify for Coded {
        fn backend(&self) -> String {
            "coded".into()
        }
        fn unauthorized(&self) -> RegistryError {
            Plain.unauthorized()
        }
        fn detail(&self, f: &Failure) -> String {
            f.header("x-code").unwrap_or_default().to_string()
        }
        fn refine(&self, _: &Failure, detail: &str) -> Option<Class> {
            (detail == "GONE").then_some(Class::NotFound)
        }
    }

    fn failure(status: u16, headers: &[(&'static str, &str)], body: &str) -> Failure {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Failure::new(StatusCode::from_u16(status).unwrap(), h, body)
    }

    #[test]
    fn status_classes() {
        let class = |s| failure(s, &[], "").status_class();
        assert_eq!(class(401), Class::Unauthorized);
        assert_eq!(class(403), Class::Unauthorized);
        assert_eq!(class(404), Class::NotFound);
        assert_eq!(class(409), Class::Conflict);
        assert_eq!(class(412), Class::Conflict);
        assert_eq!(class(408), Class::Transient);
        assert_eq!(class(429), Class::Transient);
        assert_eq!(class(500), Class::Transient);
        assert_eq!(class(503), Class::Transient);
        assert_eq!(class(400), Class::Permanent);
        assert_eq!(class(413), Class::Permanent);
    }

    #[test]
    fn errors_by_class_with_retry_after() {
        let e = classify(
            &failure(429, &[("retry-after", "7")], "slow"),
            "GET x",
            &Plain,
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            e.to_string(),
            "transport error (test host): GET x: 429 Too Many Requests slow"
        );
        let e = classify(&failure(400, &[("retry-after", "7")], ""), "PUT y", &Plain);
        assert!(!e.is_retryable());
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            e.to_string(),
            "transport error (test host): PUT y: 400 Bad Request"
        );
        let e = classify(&failure(404, &[], ""), "blob z", &Plain);
        assert_eq!(e.to_string(), "not found: blob z on test host");
        let e = classify(&failure(403, &[], ""), "blob z", &Plain);
        assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
        let e = classify(&failure(409, &[], "exists"), "create", &Plain);
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    }

    #[test]
    fn a_backend_refines_and_words_its_own() {
        let e = classify(&failure(500, &[("x-code", "GONE")], "ignored"), "m", &Coded);
        assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
        let e = classify(&failure(500, &[("x-code", "BUSY")], "ignored"), "m", &Coded);
        assert_eq!(
            e.to_string(),
            "transport error (coded): m: 500 Internal Server Error BUSY"
        );
    }

    #[test]
    fn default_detail_is_short() {
        let long = "x".repeat(5000);
        let e = classify(&failure(400, &[], &long), "m", &Plain).to_string();
        assert!(e.len() < 300, "{}", e.len());
    }
}
