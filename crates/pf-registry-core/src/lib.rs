//! pf-registry core: image references, the manifest model and closure walk,
//! the typed error, the [`Transport`] trait backends implement, and the one
//! push/pull [`Engine`] that turns any transport into a [`Registry`].
//!
//! ```
//! use pf_registry_core::{layout, Config, Digest, ImageRef, Location};
//! let r = ImageRef::parse("oci://registry.example.com/team/app:v1").unwrap();
//! assert!(matches!(r.location, Location::Oci { .. }));
//! assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
//! // Path-based backends store a blob under one key, written once here.
//! let d = Digest::of(b"blob");
//! assert!(layout::blob(&d).starts_with("blobs/sha256/"));
//! // A mistyped backend option is an error, never ignored.
//! let mut config = Config::default();
//! config.options.insert("oci.max_layer".into(), "10".into());
//! assert!(config.check_options("oci", &["oci.max_layers"]).is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod layout;
pub mod lifecycle;
pub mod manifest;
pub mod offline;
pub mod pack;
pub mod progress;
pub mod ranges;
pub mod reference;
pub mod registry;
pub mod retry;
mod spool;
pub mod transport;

/// The byte buffer [`Transport`] reads return (re-exported for wrappers).
pub use bytes::Bytes;
pub use config::Config;
pub use engine::Engine;
pub use error::{RegistryError, Result};
pub use manifest::{Descriptor, FsEntry, FsTree, KvPage, KvPages, Manifest};
pub use pf_cas::{BlobStore, DirStore, MemoryStore};
pub use pf_digest::Digest;
pub use pf_sign::{KeyId, PublicKey, SignatureEnvelope, SigningKey, TrustPolicy, Verification};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use reference::{HfRepoType, ImageRef, Location};
pub use registry::{
    ChunkRead, Inspection, KeepInStore, PullReport, PullTarget, PushReport, Registry, SignedImage,
};
pub use retry::RetryPolicy;
pub use transport::{
    ByteStream, CommitBlob, CommitRequest, EncodedBlob, FetchedManifest, KeyStore, LocalManifests,
    Transport, UploadedBlob,
};
