//! Push markers and gc records under `locks/` (see the module doc of
//! [`crate::lifecycle`] for why they make gc safe without a lock).

use std::collections::HashSet;
use std::time::Duration;

use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use super::now_ms;
use crate::error::{RegistryError, Result};
use crate::layout;
use crate::transport::Transport;

/// How long a push marker protects its blobs: a push must settle within it.
pub const PUSH_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a gc record stays live after its last renewal. A gc deletes
/// nothing later than half of it after a renewal.
pub const GC_RECORD_TTL: Duration = Duration::from_secs(120);
/// Largest marker read back (a closure of ~1M digests).
const MAX_MARKER_BYTES: u64 = 128 * 1024 * 1024;
/// How often a settling push looks again at a running gc.
const POLL: Duration = Duration::from_millis(50);

/// The JSON body of a marker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// `push` or `gc`.
    pub kind: String,
    /// Written at (ms since the epoch, writer's clock).
    pub written_ms: u64,
    /// Not live after (ms since the epoch).
    pub expires_ms: u64,
    /// Blobs a push depends on (empty for gc).
    #[serde(default)]
    pub blobs: Vec<Digest>,
}

fn key(kind: &str, id: &str) -> String {
    format!("{}/{kind}-{id}.json", layout::LOCKS)
}

fn new_id() -> String {
    format!("{:016x}{:08x}", rand::random::<u64>(), std::process::id())
}

/// Writes a marker; `Ok(false)` when the backend has no key writes.
async fn write(t: &dyn Transport, key: &str, m: &Marker) -> Result<bool> {
    let body = serde_json::to_vec(m).unwrap_or_default();
    match t.write_key(key, &body).await {
        Ok(()) => Ok(true),
        Err(RegistryError::NotSupported { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The markers of `kind` under `locks/`, parsed, with their keys. An
/// unreadable marker is an error naming it (its blobs are unknown).
pub(crate) async fn list(t: &dyn Transport, kind: &str) -> Result<Vec<(String, Marker)>> {
    let prefix = format!("{}/{kind}-", layout::LOCKS);
    let mut out = Vec::new();
    for k in t.list_keys(layout::LOCKS).await? {
        if !k.key.starts_with(&prefix) || !k.key.ends_with(".json") {
            continue;
        }
        let Some(bytes) = t.read_key(&k.key, MAX_MARKER_BYTES).await? else {
            continue; // removed since the listing
        };
        let m: Marker = serde_json::from_slice(&bytes).map_err(|e| {
            RegistryError::invalid(format!("marker {}", k.key), format!("unreadable: {e}"))
        })?;
        out.push((k.key, m));
    }
    Ok(out)
}

/// Every blob named by a live push marker.
pub(crate) async fn protected_blobs(t: &dyn Transport) -> Result<HashSet<Digest>> {
    let now = now_ms();
    Ok(list(t, "push")
        .await?
        .into_iter()
        .filter(|(_, m)| m.expires_ms > now)
        .flat_map(|(_, m)| m.blobs)
        .collect())
}

/// A push in progress, announced by its marker (see [`crate::lifecycle`]).
#[derive(Debug)]
pub struct PushGuard {
    key: String,
    /// Gc records listed right after the marker was written; `None` when
    /// they could not be listed (then the push must check its blobs).
    seen: Option<Vec<String>>,
}

impl PushGuard {
    /// Writes the marker naming `blobs` (the whole closure), then lists the
    /// running gcs; both BEFORE the push asks which blobs the backend has.
    /// `None` when the backend has no key writes (it has no gc either).
    pub async fn begin(t: &dyn Transport, blobs: &[Digest]) -> Result<Option<PushGuard>> {
        let now = now_ms();
        let key = key("push", &new_id());
        let m = Marker {
            kind: "push".into(),
            written_ms: now,
            expires_ms: now + PUSH_MARKER_TTL.as_millis() as u64,
            blobs: blobs.to_vec(),
        };
        if !write(t, &key, &m).await? {
            return Ok(None);
        }
        let seen = match list(t, "gc").await {
            Ok(v) => Some(v.into_iter().map(|(k, _)| k).collect()),
            Err(e) => {
                // E.g. a credential that may write but not list.
                tracing::debug!("cannot list running gcs at {}: {e}", t.location());
                None
            }
        };
        Ok(Some(PushGuard { key, seen }))
    }

    /// After the commit: waits until every gc listed by [`begin`](Self::begin)
    /// is finished or expired. True when the push must then check its blobs
    /// and upload what such a gc removed (a gc was running, or gcs could
    /// not be listed); false when no gc can have removed any.
    pub async fn wait_for_gcs(&self, t: &dyn Transport) -> Result<bool> {
        let Some(seen) = &self.seen else {
            return Ok(true);
        };
        for key in seen {
            loop {
                let live = match t.read_key(key, MAX_MARKER_BYTES).await? {
                    None => false,
                    // Records are written whole; an unreadable one is junk.
                    Some(b) => match serde_json::from_slice::<Marker>(&b) {
                        Ok(m) => m.expires_ms > now_ms(),
                        Err(_) => false,
                    },
                };
                if !live {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(!seen.is_empty())
    }

    /// Removes the marker (after the commit has settled).
    pub async fn release(self, t: &dyn Transport) -> Result<()> {
        t.delete_key(&self.key).await
    }
}

/// The record of a running gc.
pub(crate) struct GcRecord {
    key: String,
    /// Deletions are allowed until (ms, own clock).
    deadline_ms: u64,
}

impl GcRecord {
    /// Writes the record (before gc reads anything).
    pub async fn begin(t: &dyn Transport) -> Result<GcRecord> {
        let mut r = GcRecord {
            key: key("gc", &new_id()),
            deadline_ms: 0,
        };
        r.renew(t).await?;
        Ok(r)
    }

    /// Renews the record; deletions are allowed for half the TTL.
    pub async fn renew(&mut self, t: &dyn Transport) -> Result<()> {
        let now = now_ms();
        let ttl = GC_RECORD_TTL.as_millis() as u64;
        let m = Marker {
            kind: "gc".into(),
            written_ms: now,
            expires_ms: now + ttl,
            blobs: Vec::new(),
        };
        if !write(t, &self.key, &m).await? {
            return Err(RegistryError::not_supported(
                t.location(),
                "garbage collection",
            ));
        }
        self.deadline_ms = now + ttl / 2;
        Ok(())
    }

    /// Whether a deletion may still be issued.
    pub fn may_delete(&self) -> bool {
        now_ms() < self.deadline_ms
    }

    /// Removes the record.
    pub async fn end(self, t: &dyn Transport) -> Result<()> {
        t.delete_key(&self.key).await
    }
}

/// Deletes push markers that expired (a crashed push); returns how many.
pub(crate) async fn remove_expired(t: &dyn Transport) -> Result<usize> {
    let now = now_ms();
    let mut n = 0;
    for (k, m) in list(t, "push").await? {
        if m.expires_ms <= now {
            t.delete_key(&k).await?;
            n += 1;
        }
    }
    Ok(n)
}
