//! Progress reporting for long transfers.

use pf_digest::Digest;
use std::time::Duration;

/// Something that happened during a push or pull.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The transfer plan is known: `blobs` to move totalling `bytes` raw bytes.
    Plan {
        /// `"push"` or `"pull"`.
        op: &'static str,
        /// Blobs that will be transferred.
        blobs: u64,
        /// Their raw size (may be approximate when sizes are undeclared).
        bytes: u64,
    },
    /// More blobs were discovered (pull: children of index blobs).
    PlanGrew {
        /// Additional blobs.
        blobs: u64,
        /// Additional raw bytes (known sizes only).
        bytes: u64,
    },
    /// One blob finished.
    BlobDone {
        /// Raw digest.
        digest: Digest,
        /// Raw bytes.
        raw_bytes: u64,
        /// Bytes that crossed the transport (encoded).
        wire_bytes: u64,
    },
    /// An operation failed transiently and will be retried.
    Retry {
        /// What is retried.
        what: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Delay before the next attempt.
        delay: Duration,
        /// The error, already redacted.
        error: String,
    },
    /// Manifest and signature committed (push) or fetched (pull).
    Manifest {
        /// Digest of the manifest bytes.
        digest: Digest,
    },
}

/// Receives [`ProgressEvent`]s; must be cheap and thread-safe.
pub trait Progress: Send + Sync {
    /// Called for every event, from any thread.
    fn on_event(&self, event: &ProgressEvent);
}

/// Discards all events.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_event(&self, _event: &ProgressEvent) {}
}
