//! pf-registry: push and pull ProcessFork snapshots (a signed manifest plus
//! content-addressed blobs) to `file://`, `oci://`, `s3://`, `hf://` and
//! `ipfs://` references.
//!
//! Backends are compiled in by cargo features (`file` is the default; `oci`,
//! `s3`, `hf`, `ipfs`, or `full`). [`open`] dispatches a reference to its
//! backend; a scheme whose feature is off yields
//! [`RegistryError::Unsupported`] naming the feature to enable.
//!
//! Open a reference, push an image, pull it back (here into a temporary
//! `file://` repository; every other scheme works the same way):
//!
//! ```
//! use std::sync::Arc;
//! use pf_registry::manifest::{AgentInfo, BLOB_MEDIA_TYPE};
//! use pf_registry::{
//!     open, BlobStore, Config, Descriptor, ImageRef, Manifest, MemoryStore, SignedImage,
//!     SigningKey, TrustPolicy, Verification,
//! };
//! # fn main() -> pf_registry::Result<()> {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let repo = ImageRef::parse(&format!("file://{}", dir.path().display()))?;
//!
//! // A one-blob image, signed.
//! let local = Arc::new(MemoryStore::new());
//! let blob = local.put(b"hello, registry")?;
//! let mut manifest = Manifest::new(
//!     AgentInfo { name: "demo".into(), version: "1".into() },
//!     "2026-01-01T00:00:00Z",
//! );
//! manifest.layers.push(Descriptor {
//!     role: "world.env".into(),
//!     media_type: BLOB_MEDIA_TYPE.into(),
//!     digest: blob,
//!     size: 15,
//! });
//! let key = SigningKey::generate()?;
//! let image = SignedImage::new(&manifest, Some(&key));
//!
//! let rt = tokio::runtime::Runtime::new().expect("runtime");
//! rt.block_on(async {
//!     let pushed = open(&repo, &Config::default())?.push(local, &image).await?;
//!     assert_eq!(pushed.manifest_digest, image.digest());
//!
//!     // Pull into an empty store, requiring the signing key.
//!     let config = Config {
//!         trust: TrustPolicy::new(vec![key.public_key()]),
//!         ..Config::default()
//!     };
//!     let fresh = Arc::new(MemoryStore::new());
//!     let pulled = open(&repo, &config)?.pull(fresh.clone()).await?;
//!     assert!(matches!(pulled.verification, Verification::Verified { .. }));
//!     assert_eq!(fresh.get(&blob)?, b"hello, registry");
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use pf_registry_core::*;

/// cosign signatures of pushed `oci://` images (feature `oci`).
#[cfg(feature = "oci")]
pub use pf_registry_oci::cosign;

/// The cargo feature that enables `scheme`.
pub fn feature_for(scheme: &str) -> &'static str {
    match scheme {
        "file" => "file",
        "oci" => "oci",
        "s3" => "s3",
        "hf" => "hf",
        _ => "ipfs",
    }
}

#[allow(dead_code)]
fn unsupported(scheme: &str) -> RegistryError {
    RegistryError::Unsupported {
        scheme: scheme.to_string(),
        feature: feature_for(scheme).to_string(),
    }
}

/// The `-o` option keys the `scheme` backend takes (empty when the
/// backend is not compiled in).
pub fn options_for(scheme: &str) -> &'static [&'static str] {
    match scheme {
        #[cfg(feature = "file")]
        "file" => pf_registry_file::OPTIONS,
        #[cfg(feature = "oci")]
        "oci" => pf_registry_oci::OPTIONS,
        #[cfg(feature = "s3")]
        "s3" => pf_registry_cloud::s3::OPTIONS,
        #[cfg(feature = "hf")]
        "hf" => pf_registry_cloud::hf::OPTIONS,
        #[cfg(feature = "ipfs")]
        "ipfs" => pf_registry_cloud::ipfs::OPTIONS,
        _ => &[],
    }
}

/// Opens `reference` with its backend on the shared engine. An option key
/// the backend does not take is [`RegistryError::BadOption`].
pub fn open(reference: &ImageRef, config: &Config) -> Result<Box<dyn Registry>> {
    let t = transport(reference, config)?;
    Ok(Box::new(Engine::new(t, config.clone(), reference.digest)))
}

/// Opens both ends of a copy. Every option must be one that `src`'s or
/// `dst`'s backend takes; each side is opened with its own options only.
pub fn open_pair(
    src: &ImageRef,
    dst: &ImageRef,
    config: &Config,
) -> Result<(Box<dyn Registry>, Box<dyn Registry>)> {
    let (s, d) = (options_for(src.scheme()), options_for(dst.scheme()));
    let both: Vec<&str> = s.iter().chain(d).copied().collect();
    config.check_options(&format!("{}:// and {}", src.scheme(), dst.scheme()), &both)?;
    Ok((
        open(src, &config.only_options(s))?,
        open(dst, &config.only_options(d))?,
    ))
}

/// Opens the bare transport for `reference` (for tools and tests that need
/// to drive a backend below the engine). The one dispatch from scheme to
/// backend: [`open`] wraps its result in the engine.
pub fn transport(reference: &ImageRef, config: &Config) -> Result<Box<dyn Transport>> {
    match reference.location {
        #[cfg(feature = "file")]
        Location::File { .. } => {
            config.check_options("file", pf_registry_file::OPTIONS)?;
            Ok(Box::new(pf_registry_file::FileTransport::new(reference)?))
        }
        #[cfg(feature = "oci")]
        Location::Oci { .. } => Ok(Box::new(pf_registry_oci::OciTransport::new(
            reference, config,
        )?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => Ok(Box::new(pf_registry_cloud::s3::S3Transport::new(
            reference, config,
        )?)),
        #[cfg(feature = "hf")]
        Location::Hf { .. } => Ok(Box::new(pf_registry_cloud::hf::HfTransport::new(
            reference, config,
        )?)),
        #[cfg(feature = "ipfs")]
        Location::Ipfs { .. } => Ok(Box::new(pf_registry_cloud::ipfs::IpfsTransport::new(
            reference, config,
        )?)),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = config;
            Err(unsupported(reference.scheme()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_backend_names_its_feature() {
        for (s, on) in [
            ("oci://localhost/x", cfg!(feature = "oci")),
            ("s3://bucket/x", cfg!(feature = "s3")),
            ("hf://o/r", cfg!(feature = "hf")),
            ("ipfs://", cfg!(feature = "ipfs")),
        ] {
            if on {
                continue;
            }
            let r = ImageRef::parse(s).unwrap();
            match open(&r, &Config::default()) {
                Err(RegistryError::Unsupported { feature, .. }) => {
                    assert_eq!(feature, feature_for(r.scheme()));
                    let msg = open(&r, &Config::default()).err().unwrap().to_string();
                    assert!(msg.contains(&format!("feature \"{feature}\"")), "{msg}");
                }
                Err(e) => panic!("{s}: {e}"),
                Ok(_) => panic!("{s}: opened without its feature"),
            }
        }
    }

    #[test]
    fn options_of_another_backend_are_refused_listing_the_valid_ones() {
        let r = ImageRef::parse("file:///tmp/pf-options-test").unwrap();
        let mut c = Config::default();
        c.options.insert("hf.public".into(), "true".into());
        match open(&r, &c) {
            Err(RegistryError::BadOption { key, scheme, valid }) => {
                assert_eq!((key.as_str(), scheme.as_str()), ("hf.public", "file"));
                assert!(valid.is_empty());
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an hf option opened a file:// repository"),
        }
        // For a copy, an option of either end is fine; each end gets its own.
        let other = ImageRef::parse("file:///tmp/pf-options-test-2").unwrap();
        c.options.clear();
        assert!(open_pair(&r, &other, &c).is_ok());
        c.options.insert("x.unknown".into(), "1".into());
        let e = open_pair(&r, &other, &c).err().unwrap().to_string();
        assert!(e.contains("x.unknown"), "{e}");
    }
}
