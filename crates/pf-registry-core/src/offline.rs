//! Pulls without the network, for backends with an offline mode (the Hub's
//! `HF_HUB_OFFLINE`; see [`Transport::local_manifests`](crate::Transport::local_manifests)).
//!
//! Every online pull through such a backend keeps the manifest and its
//! signature in the local store as blobs, with a small record blob
//! (`{"manifest": digest, "signature": digest | null}`) that two refs of
//! the store name: one by the manifest digest, one by the immutable
//! revision the transport read (a Hub commit id), if it read one.
//!
//! An offline pull finds the record through the reference's `@sha256:`
//! pin, else through that revision; checks every byte against its digest;
//! then verifies the signature and the pin exactly as for fetched bytes. A
//! reference that names neither (a branch or tag, which may have moved
//! since) is refused, and so is a pull that would need a blob the store
//! lacks: nothing is fetched.

use bytes::Bytes;
use pf_cas::BlobStore;
use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::manifest::{ClosureBlob, MAX_MANIFEST_BYTES};
use crate::transport::FetchedManifest;

/// Largest signature envelope kept or read.
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;
/// Largest record blob read.
const MAX_RECORD_BYTES: u64 = 4096;

/// What a ref names: the pulled manifest and its signature.
#[derive(Serialize, Deserialize)]
struct Record {
    manifest: Digest,
    signature: Option<Digest>,
}

fn by_digest(d: &Digest) -> String {
    format!("pf.pulled.manifest {d}")
}

fn by_revision(r: &str) -> String {
    format!("pf.pulled.revision {r}")
}

/// Keeps `fetched` in `store` under its manifest digest and, if given, the
/// immutable `revision` it was read at.
pub fn record(
    store: &dyn BlobStore,
    fetched: &FetchedManifest,
    revision: Option<&str>,
) -> Result<()> {
    let manifest = store.put(&fetched.manifest)?;
    let signature = match &fetched.signature {
        Some(s) if s.len() as u64 <= MAX_SIGNATURE_BYTES => Some(store.put(s)?),
        _ => None,
    };
    let bytes = serde_json::to_vec(&Record {
        manifest,
        signature,
    })
    .map_err(|e| RegistryError::invalid("pull record", e.to_string()))?;
    let rec = store.put(&bytes)?;
    store.set_ref(&by_digest(&manifest), &rec)?;
    if let Some(r) = revision {
        store.set_ref(&by_revision(r), &rec)?;
    }
    Ok(())
}

/// The manifest and signature an earlier pull recorded for `pin` (else
/// `revision`) at `location`; `switch` names what barred the network.
pub fn load(
    store: &dyn BlobStore,
    pin: Option<Digest>,
    revision: Option<&str>,
    switch: &str,
    location: &str,
) -> Result<FetchedManifest> {
    let name = match (pin, revision) {
        (Some(d), _) => by_digest(&d),
        (None, Some(r)) => by_revision(r),
        (None, None) => {
            return Err(RegistryError::BadReference {
                input: location.to_string(),
                reason: format!(
                    "{switch} is set and the reference is not pinned: a branch or tag may have \
                     moved since it was pulled, so pf does not resolve it offline; name a commit \
                     id (@<40-hex commit>) or a manifest digest (@sha256:...) pulled before"
                ),
            })
        }
    };
    let not_local = || {
        RegistryError::not_found(format!(
            "manifest of {location} in the local store ({switch} is set, so pf does not ask \
             the backend; pull it once with the network)"
        ))
    };
    let rec = store.get_ref(&name)?.ok_or_else(not_local)?;
    let rec: Record = serde_json::from_slice(&checked(store, &rec, MAX_RECORD_BYTES)?)
        .map_err(|e| RegistryError::invalid(format!("pull record {rec}"), e.to_string()))?;
    let manifest = checked(store, &rec.manifest, MAX_MANIFEST_BYTES as u64)?;
    let signature = match rec.signature {
        Some(d) => Some(checked(store, &d, MAX_SIGNATURE_BYTES)?),
        None => None,
    };
    Ok(FetchedManifest {
        manifest,
        signature,
        pin_verified: false,
    })
}

/// The error for blobs an offline pull needs and the store lacks.
pub fn missing(need: &[ClosureBlob], switch: &str, location: &str) -> RegistryError {
    let first = need
        .first()
        .map(|b| b.digest.to_string())
        .unwrap_or_default();
    let more = match need.len() {
        0 | 1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    RegistryError::not_found(format!(
        "blob {first}{more} of {location} in the local store ({switch} is set, so pf does not \
         fetch them; pull it once with the network)"
    ))
}

/// Blob `d` from `store`, at most `limit` bytes, hashing to `d`.
fn checked(store: &dyn BlobStore, d: &Digest, limit: u64) -> Result<Bytes> {
    match store.size(d)? {
        None => {
            return Err(RegistryError::not_found(format!(
                "blob {d} in the local store"
            )))
        }
        Some(n) if n > limit => {
            return Err(RegistryError::invalid(
                format!("local blob {d}"),
                format!("{n} bytes exceeds the limit {limit}"),
            ))
        }
        Some(_) => {}
    }
    let bytes = store.get(d)?;
    let actual = Digest::of(&bytes);
    if actual != *d {
        return Err(RegistryError::Integrity {
            what: format!("local blob {d}"),
            expected: *d,
            actual,
        });
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use pf_cas::MemoryStore;

    use super::*;

    fn fetched(m: &[u8], s: Option<&[u8]>) -> FetchedManifest {
        FetchedManifest {
            manifest: Bytes::copy_from_slice(m),
            signature: s.map(Bytes::copy_from_slice),
            pin_verified: false,
        }
    }

    #[test]
    fn recorded_by_digest_and_revision() {
        let store = MemoryStore::new();
        let f = fetched(b"{\"m\":1}", Some(b"sig"));
        let d = Digest::of(&f.manifest);
        record(&store, &f, Some("hf e model/o/r@c0ffee")).unwrap();
        for (pin, rev) in [(Some(d), None), (None, Some("hf e model/o/r@c0ffee"))] {
            let got = load(&store, pin, rev, "OFF", "loc").unwrap();
            assert_eq!(got.manifest, f.manifest);
            assert_eq!(got.signature, f.signature);
        }
        // Another revision, another digest: not local (NotFound, naming the switch).
        let other = Digest::of(b"other");
        for (pin, rev) in [(Some(other), None), (None, Some("hf e model/o/r@beef"))] {
            let e = load(&store, pin, rev, "OFF", "loc").unwrap_err();
            assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
            assert!(e.to_string().contains("OFF"), "{e}");
        }
        // Neither pinned: refused as a bad reference.
        let e = load(&store, None, None, "OFF", "loc").unwrap_err();
        assert!(matches!(e, RegistryError::BadReference { .. }), "{e}");
        assert!(e.to_string().contains("OFF"), "{e}");
    }

    #[test]
    fn unsigned_and_damaged_records() {
        let store = MemoryStore::new();
        let f = fetched(b"{\"m\":2}", None);
        record(&store, &f, None).unwrap();
        let d = Digest::of(&f.manifest);
        assert_eq!(
            load(&store, Some(d), None, "X", "l").unwrap().signature,
            None
        );
        // A ref to something that is not a record is invalid data.
        let junk = store.put(b"not json").unwrap();
        store.set_ref(&by_digest(&d), &junk).unwrap();
        let e = load(&store, Some(d), None, "X", "l").unwrap_err();
        assert!(matches!(e, RegistryError::InvalidData { .. }), "{e}");
    }
}
