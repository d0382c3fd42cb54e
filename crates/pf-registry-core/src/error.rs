//! The typed error every pf-registry operation returns.

use std::io;
use std::time::Duration;

use pf_cas::CasError;
use pf_digest::Digest;
use pf_sign::SignError;

/// A boxed underlying error kept as the source of a [`RegistryError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout pf-registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Everything that can go wrong pushing or pulling. Messages never contain
/// secrets: backends put only redacted locations in them.
///
/// New variants may be added; match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The reference, manifest or a blob does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for, e.g. `manifest at oci://host/repo:tag` or `blob sha256:…`.
        what: String,
    },
    /// Credentials missing, wrong or insufficient.
    #[error("unauthorized: {registry}: {detail}")]
    Unauthorized {
        /// The registry / bucket / repo that refused, without credentials.
        registry: String,
        /// What to do about it.
        detail: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("integrity error: {what}: expected {expected}, got {actual}")]
    Integrity {
        /// Which object failed.
        what: String,
        /// The digest it should have had.
        expected: Digest,
        /// The digest it had.
        actual: Digest,
    },
    /// Data that is structurally invalid (malformed manifest, index blob, oversized blob).
    #[error("invalid data: {what}: {reason}")]
    InvalidData {
        /// Which object.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The signature is missing, untrusted or wrong.
    #[error("signature check failed: {0}")]
    Signature(#[from] SignError),
    /// An image reference string did not parse.
    #[error("bad reference {input:?}: {reason}")]
    BadReference {
        /// The input (truncated).
        input: String,
        /// Why.
        reason: String,
    },
    /// A backend option (`-o key=value`) the backend does not take: unknown,
    /// or meant for another backend.
    #[error(
        "unknown option {key:?} for {scheme}://; valid options: {}",
        list_or_none(valid)
    )]
    BadOption {
        /// The key as given.
        key: String,
        /// The scheme of the backend that refused it.
        scheme: String,
        /// The keys that backend takes.
        valid: Vec<String>,
    },
    /// A scheme whose backend is not compiled in.
    #[error("{scheme}:// is not supported by this build; rebuild pf-registry with cargo feature \"{feature}\"")]
    Unsupported {
        /// The scheme, e.g. `oci`.
        scheme: String,
        /// The cargo feature that enables it.
        feature: String,
    },
    /// Network / server failure, possibly after retries. Built with
    /// [`transient`](Self::transient), [`permanent`](Self::permanent) and
    /// [`with_source`](Self::with_source).
    #[error("transport error ({backend}): {message}{}", attempts_note(*.attempts))]
    #[non_exhaustive]
    Transport {
        /// Backend and location, e.g. `oci 127.0.0.1:5000/foo`.
        backend: String,
        /// What failed.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
        /// How many attempts were made before giving up (0 = not retried yet).
        attempts: u32,
        /// Server-requested delay (Retry-After), if any.
        retry_after: Option<Duration>,
        /// The underlying error (e.g. the HTTP client's), for callers that
        /// walk the chain; `message` already says what failed.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend cannot do this operation (e.g. garbage collection on a
    /// registry that collects its own garbage).
    #[error("{backend}: {operation} is not supported by this backend")]
    NotSupported {
        /// The backend location.
        backend: String,
        /// What was asked.
        operation: String,
    },
    /// A concurrent writer changed the target; nothing was overwritten.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Local I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn list_or_none(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl RegistryError {
    /// [`RegistryError::NotSupported`] for `operation` at `backend`.
    pub fn not_supported(backend: impl Into<String>, operation: impl Into<String>) -> Self {
        RegistryError::NotSupported {
            backend: backend.into(),
            operation: operation.into(),
        }
    }

    /// A retryable transport error.
    pub fn transient(backend: impl Into<String>, message: impl Into<String>) -> Self {
        RegistryError::transient_after(backend, message, None)
    }

    /// A retryable transport error after which the server asked to wait
    /// `retry_after` (its `Retry-After`), if it said.
    pub fn transient_after(
        backend: impl Into<String>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        RegistryError::Transport {
            backend: backend.into(),
            message: message.into(),
            retryable: true,
            attempts: 0,
            retry_after,
            source: None,
        }
    }

    /// A non-retryable transport error.
    pub fn permanent(backend: impl Into<String>, message: impl Into<String>) -> Self {
        RegistryError::Transport {
            backend: backend.into(),
            message: message.into(),
            retryable: false,
            attempts: 0,
            retry_after: None,
            source: None,
        }
    }

    /// This transport error with `err` kept as its [`source`](std::error::Error::source);
    /// other variants are returned unchanged.
    pub fn with_source(mut self, err: impl Into<BoxError>) -> Self {
        if let RegistryError::Transport { source, .. } = &mut self {
            *source = Some(err.into());
        }
        self
    }

    /// How many attempts were made before a transport error was returned
    /// (0 when not run under a retry policy, or not a transport error).
    pub fn attempts(&self) -> u32 {
        match self {
            RegistryError::Transport { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// Records that `n` attempts were made (transport errors only).
    pub fn set_attempts(&mut self, n: u32) {
        if let RegistryError::Transport { attempts, .. } = self {
            *attempts = n;
        }
    }

    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }

    /// Structurally invalid data.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        RegistryError::InvalidData {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Not found.
    pub fn not_found(what: impl Into<String>) -> Self {
        RegistryError::NotFound { what: what.into() }
    }

    /// Whether the retry policy should try again.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { retryable, .. } => *retryable,
            RegistryError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// Delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Transport { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Converts to an `io::Error` carrying this error, for stream adapters.
    pub fn into_io(self) -> io::Error {
        match self {
            RegistryError::Io { source, .. } => source,
            other => io::Error::other(other),
        }
    }

    /// Recovers a `RegistryError` smuggled through an `io::Error` by [`into_io`](Self::into_io).
    pub fn from_io(context: &str, e: io::Error) -> Self {
        if e.get_ref().is_some_and(|i| i.is::<RegistryError>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(re) = inner.downcast::<RegistryError>() {
                    return *re;
                }
            }
            return RegistryError::io(context, io::Error::other("unrecoverable inner error"));
        }
        RegistryError::io(context, e)
    }
}

impl From<CasError> for RegistryError {
    fn from(e: CasError) -> Self {
        match e {
            CasError::NotFound(d) => {
                RegistryError::not_found(format!("blob {d} in the local store"))
            }
            CasError::Integrity { expected, actual } => RegistryError::Integrity {
                what: format!("blob {expected}"),
                expected,
                actual,
            },
            CasError::Io { context, source } => RegistryError::from_io(&context, source),
            other => RegistryError::io("local store", io::Error::other(other)),
        }
    }
}
