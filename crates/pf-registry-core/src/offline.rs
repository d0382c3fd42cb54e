//! Pulls without the network, for backends with an offline mode (the Hub's
//! `HF_HUB_OFFLINE`; see [`Transport::local_manifests`](crate::Transport::local_manifests)).
//!
//! Every online pull through such a backend keeps the manifest and its
//! signature as named values of the local store (beside the blobs, see
//! [`BlobStore::put_named`]): the manifest bytes and the signature bytes
//! (empty: unsigned) under the manifest digest, and the manifest digest
//! under the immutable revision the transport read (a Hub commit id), if
//! it read one.
//!
//! An offline pull finds the manifest through the reference's `@sha256:`
//! pin, else through that revision; checks it against its digest; then
//! verifies the signature and the pin exactly as for fetched bytes. A
//! reference that names neither (a branch or tag, which may have moved
//! since) is refused, and so is a pull that would need a blob the store
//! lacks: nothing is fetched.

use bytes::Bytes;
use pf_cas::BlobStore;
use pf_digest::Digest;

use crate::error::{RegistryError, Result};
use crate::manifest::{ClosureBlob, MAX_MANIFEST_BYTES};
use crate::transport::FetchedManifest;

/// Largest signature envelope kept or read.
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

fn manifest_name(d: &Digest) -> String {
    format!("pf.pulled.manifest {d}")
}

fn signature_name(d: &Digest) -> String {
    format!("pf.pulled.signature {d}")
}

fn revision_name(r: &str) -> String {
    format!("pf.pulled.revision {r}")
}

/// Keeps `fetched` in `store` under its manifest digest and, if given, the
/// immutable `revision` it was read at.
pub fn record(
    store: &dyn BlobStore,
    fetched: &FetchedManifest,
    revision: Option<&str>,
) -> Result<()> {
    let d = Digest::of(&fetched.manifest);
    let sig = match &fetched.signature {
        Some(s) if s.len() <= MAX_SIGNATURE_BYTES => &s[..],
        _ => &[],
    };
    store.put_named(&manifest_name(&d), &fetched.manifest)?;
    store.put_named(&signature_name(&d), sig)?;
    if let Some(r) = revision {
        store.put_named(&revision_name(r), d.to_string().as_bytes())?;
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
    let not_local = || {
        RegistryError::not_found(format!(
            "manifest of {location} in the local store ({switch} is set, so pf does not ask \
             the backend; pull it once with the network)"
        ))
    };
    let d = match (pin, revision) {
        (Some(d), _) => d,
        (None, Some(r)) => {
            let v = store.get_named(&revision_name(r))?.ok_or_else(not_local)?;
            std::str::from_utf8(&v)
                .ok()
                .and_then(|t| Digest::parse(t).ok())
                .ok_or_else(|| {
                    RegistryError::invalid(format!("local record of {location}"), "not a digest")
                })?
        }
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
    let manifest = store.get_named(&manifest_name(&d))?.ok_or_else(not_local)?;
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(RegistryError::invalid(
            format!("local manifest {d}"),
            format!("larger than {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let actual = Digest::of(&manifest);
    if actual != d {
        return Err(RegistryError::Integrity {
            what: format!("local manifest of {location}"),
            expected: d,
            actual,
        });
    }
    let signature = store
        .get_named(&signature_name(&d))?
        .filter(|s| !s.is_empty() && s.len() <= MAX_SIGNATURE_BYTES)
        .map(Bytes::from);
    Ok(FetchedManifest {
        manifest: Bytes::from(manifest),
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
        record(&store, &f, Some("rev")).unwrap();
        let d = Digest::of(&f.manifest);
        assert_eq!(
            load(&store, Some(d), None, "X", "l").unwrap().signature,
            None
        );
        // Kept outside the blobs.
        assert!(store.list().unwrap().is_empty());
        // A damaged copy is an integrity error, a garbled revision record invalid.
        store.put_named(&manifest_name(&d), b"{}").unwrap();
        let e = load(&store, Some(d), None, "X", "l").unwrap_err();
        assert!(matches!(e, RegistryError::Integrity { .. }), "{e}");
        store.put_named(&revision_name("rev"), b"junk").unwrap();
        let e = load(&store, None, Some("rev"), "X", "l").unwrap_err();
        assert!(matches!(e, RegistryError::InvalidData { .. }), "{e}");
    }
}
