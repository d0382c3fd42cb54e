//! Opt-in client-side encryption of ProcessFork images.
//!
//! One job: keys, recipients and sealing. An encrypted image is an
//! ordinary image (the engine pushes, pulls, signs and copies it without
//! keys) whose blobs are opaque:
//!
//! - **Keys** ([`keys`]): a recipient is an X25519 public key, an identity
//!   its secret key. Each destination has a random 32-byte data key `K`,
//!   wrapped for every recipient in a clear [`KeyEnvelope`]
//!   ([`envelope`]); adding a recipient wraps `K` again and re-encrypts
//!   nothing. The pusher keeps `K` per destination in the local store
//!   ([`KeyBook`]) so the next version seals the same chunks to the same
//!   bytes.
//! - **Sealing** ([`seal`]): each chunk is compressed, then sealed with
//!   AES-256-GCM under a key derived from `K` and the chunk's keyed hash,
//!   with a fixed nonce: deterministic (dedup), and a (key, nonce) pair
//!   never seals two plaintexts. A push's upload reads the sealed packs
//!   from an [`image::PushSource`]: sealed again as read when they do not
//!   compress, else held in memory ([`Staging`]) or on disk.
//! - **Images** ([`image`]): a pack of the plaintext format v2 image
//!   becomes the concatenation of its sealed chunks; the inner manifest,
//!   the fs tree and the pack map (plaintext to sealed offsets) are sealed
//!   together as one index blob. The outer manifest lists the envelope,
//!   the sealed index and the sealed packs with opaque media types, a fixed
//!   agent and date, and nothing else, so storage sees only ciphertext
//!   digests and sizes; a signature signs the outer manifest, so a pull
//!   checks it before anything is decrypted. A pull opens the index
//!   ([`open_index`]) and restores through a view that opens each sealed
//!   pack as it is read ([`OpenedStore`]): no plaintext pack is written.
//!
//! ```
//! # fn main() -> Result<(), pf_crypt::CryptError> {
//! use pf_crypt::{DataKey, Identity, KeyEnvelope, Sealer};
//!
//! // A recipient's key pair, and a repository's data key wrapped for it.
//! let alice = Identity::generate()?;
//! let key = DataKey::generate()?;
//! let envelope = KeyEnvelope::wrap(&key, &[alice.recipient()])?;
//!
//! // The same chunk seals to the same bytes; only K's holders open it.
//! let sealer = Sealer::new(&key, 3);
//! let sealed = sealer.seal(b"API_TOKEN=secret");
//! assert_eq!(sealed, sealer.seal(b"API_TOKEN=secret"));
//! let opened = Sealer::new(&envelope.unwrap_key(&alice)?, 3).open(&sealed, 1024)?;
//! assert_eq!(opened, b"API_TOKEN=secret");
//! assert!(Identity::generate().and_then(|bob| envelope.unwrap_key(&bob)).is_err());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod book;
pub mod browse;
pub mod envelope;
pub mod image;
pub mod keys;
pub mod pull;
pub mod seal;
mod staging;

pub use book::KeyBook;
pub use envelope::KeyEnvelope;
pub use image::{
    is_encrypted, open_image, open_index, open_index_with, seal_image, Opened, OpenedStore,
    PackSeal, SealedImage,
};
pub use keys::{DataKey, Identity, KeyId, Recipient};
pub use seal::Sealer;
pub use staging::Staging;

use pf_registry_core::RegistryError;

/// What can go wrong with keys or sealed data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// The identity is not one the image was encrypted to.
    #[error(
        "identity {tried} cannot open this image: it was encrypted to key id(s) {}",
        list(recipients)
    )]
    WrongIdentity {
        /// The identity's key id.
        tried: KeyId,
        /// The key ids the image was encrypted to.
        recipients: Vec<KeyId>,
    },
    /// The image is encrypted and no identity was given.
    #[error("the image is encrypted to key id(s) {}: pass --identity FILE", list(.0))]
    NeedIdentity(Vec<KeyId>),
    /// A sealed piece failed authentication: it was altered, or sealed
    /// under another key.
    #[error("a sealed blob failed authentication (tampered, or sealed under another key)")]
    Authentication,
    /// A sealed structure is malformed.
    #[error("malformed encrypted image: {0}")]
    Malformed(String),
    /// A key or recipient file (or list) is unusable.
    #[error("{0}")]
    BadKeyFile(String),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// Local I/O.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store or the image model refused something.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl CryptError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> CryptError {
        CryptError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<pf_cas::CasError> for CryptError {
    fn from(e: pf_cas::CasError) -> Self {
        CryptError::Registry(e.into())
    }
}

fn list(ids: &[KeyId]) -> String {
    let v: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, CryptError>;
