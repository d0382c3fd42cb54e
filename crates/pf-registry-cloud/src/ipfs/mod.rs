//! The `ipfs://` backend against a node's Kubo HTTP RPC API (`IPFS_API`,
//! default `http://127.0.0.1:5001`; option `ipfs.api`).
//!
//! Blobs are added as raw-leaf CIDv1 files. A dedup index lives in the
//! node's MFS at `/pf-registry/blobs/sha256/<aa>/<hex>.zst`, so a blob the
//! node already has is not added again. A push encodes the image directory
//! (`manifest.json`, `manifest.json.sig`, `blobs/sha256/<aa>/<hex>.zst`)
//! as dag-pb blocks itself and writes them with `block/put` (the same image
//! always gets the same root; see `image_dir`), pins its root and returns
//! `ipfs://<root CID>` (CIDv1, base32). Pulls read `/ipfs/<cid>/...`
//! with `cat`, or, with `-o ipfs.gateway=URL`, fetch raw blocks from a
//! trustless gateway and check each against its CID (no RPC access needed);
//! the engine verifies every blob by its sha256 on top of that.
//!
//! The index is also the node's repository for the lifecycle commands
//! (`keys`): every push records its image there (manifest, signature,
//! pinned root, and `manifest.json`, the last push), so `ipfs://` pulls
//! the last push, `ipfs://@sha256:<hex>` the image with that manifest
//! digest (read from the index; a blob whose index entry is gone is read
//! from the image's pinned root), and `tags`, `log`, `rm`, `retain`,
//! `gc` and `verify` work on `ipfs://` as on `file://`.

mod config;
mod dag;
mod gateway;
mod image_dir;
mod keys;
mod transport;

use pf_registry_core::{Config, Engine, ImageRef, Result};

pub use config::OPTIONS;
pub use transport::IpfsTransport;

/// Opens an `ipfs://` reference on the shared engine.
pub fn open(reference: &ImageRef, config: &Config) -> Result<Engine<IpfsTransport>> {
    Ok(Engine::new(
        IpfsTransport::new(reference, config)?,
        config.clone(),
        reference.digest,
    ))
}
