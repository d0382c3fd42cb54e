//! pf-registry core: image references, the manifest model and closure walk,
//! the typed error, the [`Transport`] trait backends implement, and the one
//! push/pull [`Engine`] that turns any transport into a [`Registry`].
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
pub mod progress;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod transport;

pub use config::Config;
pub use engine::Engine;
pub use error::{RegistryError, Result};
pub use manifest::{Descriptor, FsEntry, FsTree, KvPage, KvPages, Manifest};
pub use pf_cas::{BlobStore, DirStore, MemoryStore};
pub use pf_digest::Digest;
pub use pf_sign::{KeyId, PublicKey, SignatureEnvelope, SigningKey, TrustPolicy, Verification};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use reference::{ImageRef, Location};
pub use registry::{
    Inspection, KeepInStore, PullReport, PullTarget, PushReport, Registry, SignedImage,
};
pub use retry::RetryPolicy;
pub use transport::{
    ByteStream, CommitBlob, CommitRequest, EncodedBlob, FetchedManifest, Transport, UploadedBlob,
};
