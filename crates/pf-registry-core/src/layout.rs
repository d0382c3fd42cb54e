//! The storage keys of the path-based repository layout, written once for
//! every backend that stores images as named files or objects (`file://`,
//! `s3://`, `hf://`, `ipfs://`). Keys are relative, `/`-separated paths; a
//! backend joins them under its root, prefix or directory.
//!
//! ```text
//! manifest.json                    manifest of the untagged reference (written LAST)
//! manifest.json.sig                its signature envelope (convenience copy)
//! tags/<tag>/manifest.json         manifest of `:<tag>` (written LAST)
//! tags/<tag>/manifest.json.sig     its signature envelope (convenience copy)
//! manifests/sha256/<hex>.json      every committed manifest, by digest (`@sha256:` pulls)
//! signatures/sha256/<hex>.sig      every committed signature, by MANIFEST digest
//! blobs/sha256/<aa>/<hex>.zst      zstd-encoded blobs named by their RAW digest
//! locks/push-<id>.json             a push in progress (see `crate::lifecycle`)
//! locks/gc-<id>.json               a garbage collection running
//! ```
//!
//! ```
//! use pf_registry_core::{layout, Digest};
//! let d = Digest::of(b"hello");
//! let key = layout::blob(&d);
//! assert_eq!(key, format!("blobs/sha256/{}/{}.zst", &d.hex()[..2], d.hex()));
//! assert_eq!(layout::blob_digest(&key), Some(d));
//! assert_eq!(layout::tag_manifest(Some("v1")), "tags/v1/manifest.json");
//! ```

use pf_digest::Digest;

use crate::error::{RegistryError, Result};

/// The manifest of the untagged reference.
pub const MANIFEST: &str = "manifest.json";
/// The signature envelope next to [`MANIFEST`].
pub const SIGNATURE: &str = "manifest.json.sig";
/// The directory that holds every encoded blob (sharded below).
pub const BLOBS: &str = "blobs/sha256";
/// Suffix of an encoded blob's key.
const BLOB_SUFFIX: &str = ".zst";

/// `blobs/sha256/<aa>/<hex>.zst`: the encoded blob named by its raw `digest`.
pub fn blob(digest: &Digest) -> String {
    format!("{BLOBS}/{}/{}{BLOB_SUFFIX}", digest.shard(), digest.hex())
}

/// The raw digest a key made by [`blob`] names; `None` for any other key
/// (foreign objects under a prefix are ignored, never trusted).
pub fn blob_digest(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(BLOBS)?.strip_prefix('/')?;
    let (_, file) = rest.split_once('/')?;
    let hex = file.strip_suffix(BLOB_SUFFIX)?;
    let d = Digest::parse_hex(hex).ok()?;
    (blob(&d) == key).then_some(d)
}

/// `manifests/sha256/<hex>.json`: the manifest whose digest is `digest`.
pub fn manifest_by_digest(digest: &Digest) -> String {
    format!("manifests/sha256/{}.json", digest.hex())
}

/// `signatures/sha256/<hex>.sig`: the signature of the manifest `digest`.
pub fn signature_by_digest(digest: &Digest) -> String {
    format!("signatures/sha256/{}.sig", digest.hex())
}

/// The directory of tag pointers (`tags/<tag>/manifest.json`).
pub const TAGS: &str = "tags";
/// The directory of manifests by digest.
pub const MANIFESTS: &str = "manifests/sha256";
/// The directory of lifecycle markers: `locks/push-<id>.json` (a push in
/// progress) and `locks/gc-<id>.json` (a garbage collection running).
/// Neither is a lock: see `crate::lifecycle`.
pub const LOCKS: &str = "locks";

/// The tag a key made by [`tag_manifest`] names (`Some(None)` for the
/// untagged [`MANIFEST`]); `None` for any other key.
pub fn tag_of(key: &str) -> Option<Option<String>> {
    if key == MANIFEST {
        return Some(None);
    }
    let t = key.strip_prefix("tags/")?.strip_suffix("/manifest.json")?;
    (!t.is_empty() && !t.contains('/')).then(|| Some(t.to_string()))
}

/// The manifest digest a key made by [`manifest_by_digest`] names.
pub fn manifest_digest(key: &str) -> Option<Digest> {
    let hex = key
        .strip_prefix("manifests/sha256/")?
        .strip_suffix(".json")?;
    let d = Digest::parse_hex(hex).ok()?;
    (manifest_by_digest(&d) == key).then_some(d)
}

/// The manifest a tag points at: `tags/<tag>/manifest.json`, or
/// [`MANIFEST`] for the untagged reference. The commit point of a push.
pub fn tag_manifest(tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("tags/{t}/{MANIFEST}"),
        None => MANIFEST.to_string(),
    }
}

/// The signature copy next to [`tag_manifest`].
pub fn tag_signature(tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("tags/{t}/{SIGNATURE}"),
        None => SIGNATURE.to_string(),
    }
}

/// Checks that `key` is a relative layout key: `/`-separated normal
/// components (no empty, `.` or `..` component, no NUL), not empty. Every
/// backend that maps keys to paths or object names calls this first.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            format!("key {key:?}"),
            "not a repository key",
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_must_be_plain_relative_paths() {
        for ok in ["manifest.json", "blobs/sha256", "tags/v1/manifest.json"] {
            assert!(super::check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a/\0b",
        ] {
            assert!(super::check_key(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn keys_snapshot() {
        let d = Digest::of(b"pf layout");
        let keys = [
            blob(&d),
            manifest_by_digest(&d),
            signature_by_digest(&d),
            tag_manifest(None),
            tag_signature(None),
            tag_manifest(Some("v1.2")),
            tag_signature(Some("v1.2")),
        ];
        insta::assert_snapshot!(keys.join("\n"));
    }

    #[test]
    fn blob_digest_inverts_blob_only() {
        let d = Digest::of(b"x");
        assert_eq!(blob_digest(&blob(&d)), Some(d));
        let hex = d.hex();
        for foreign in [
            format!("blobs/sha256/00/{hex}.zst"),
            format!("blobs/sha256/{hex}.zst"),
            format!("blobs/sha256/{}/{hex}.zst.tmp", &hex[..2]),
            format!("other/sha256/{}/{hex}.zst", &hex[..2]),
            format!("blobs/sha256/{}/{}.zst", &hex[..2], hex.to_uppercase()),
            manifest_by_digest(&d),
        ] {
            assert_eq!(blob_digest(&foreign), None, "{foreign}");
        }
    }
}
