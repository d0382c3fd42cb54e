//! pf-registry: push and pull ProcessFork snapshots (a signed manifest plus
//! content-addressed blobs) to `file://`, `oci://`, `s3://`, `hf://` and
//! `ipfs://` references.
//!
//! Backends are compiled in by cargo features (`file` is the default; `oci`,
//! `s3`, `hf`, `ipfs`, or `full`). [`open`] dispatches a reference to its
//! backend; a scheme whose feature is off yields
//! [`RegistryError::Unsupported`] naming the feature to enable.
//!
//! ```no_run
//! # async fn demo() -> pf_registry::Result<()> {
//! use std::sync::Arc;
//! use pf_registry::{open, Config, DirStore, ImageRef, Registry};
//! let store = Arc::new(DirStore::open("/tmp/pf-store")?);
//! let reg = open(&ImageRef::parse("file:///tmp/pf-repo")?, &Config::default())?;
//! let report = reg.pull(store).await?;
//! println!("{} blobs, {}", report.blobs_total, report.verification);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use pf_registry_core::*;

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

/// Schemes compiled into this build.
pub fn enabled_schemes() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "file") {
        v.push("file");
    }
    if cfg!(feature = "oci") {
        v.push("oci");
    }
    if cfg!(feature = "s3") {
        v.push("s3");
    }
    if cfg!(feature = "hf") {
        v.push("hf");
    }
    if cfg!(feature = "ipfs") {
        v.push("ipfs");
    }
    v
}

#[allow(dead_code)]
fn unsupported(scheme: &str) -> RegistryError {
    RegistryError::Unsupported {
        scheme: scheme.to_string(),
        feature: feature_for(scheme).to_string(),
    }
}

/// Opens `reference` with its backend on the shared engine.
pub fn open(reference: &ImageRef, config: &Config) -> Result<Box<dyn Registry>> {
    match reference.location {
        #[cfg(feature = "file")]
        Location::File { .. } => Ok(Box::new(pf_registry_file::open(reference, config)?)),
        #[cfg(feature = "oci")]
        Location::Oci { .. } => Ok(Box::new(pf_registry_oci::open(reference, config)?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => Ok(Box::new(pf_registry_cloud::s3::open(reference, config)?)),
        #[cfg(feature = "hf")]
        Location::Hf { .. } => Ok(Box::new(pf_registry_cloud::hf::open(reference, config)?)),
        #[cfg(feature = "ipfs")]
        Location::Ipfs { .. } => Ok(Box::new(pf_registry_cloud::ipfs::open(reference, config)?)),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = config;
            Err(unsupported(reference.scheme()))
        }
    }
}

/// Opens the bare transport for `reference` (for tools and tests that need
/// to drive a backend below the engine).
pub fn transport(reference: &ImageRef, config: &Config) -> Result<Box<dyn Transport>> {
    match reference.location {
        #[cfg(feature = "file")]
        Location::File { .. } => Ok(Box::new(pf_registry_file::FileTransport::new(reference)?)),
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
}
