//! The `hf://` backend: the Hugging Face Hub HTTP API, as the official
//! `huggingface_hub` client uses it. References are spelled as its
//! `HfFileSystem` spells them: `hf://owner/repo` (a model repository),
//! `hf://datasets/owner/repo`, `hf://spaces/owner/repo`, each `[@revision]`.
//!
//! A push uses an existing repository as is, creating it only when it is
//! missing (PRIVATE unless `hf.public=true`; of the type the reference names;
//! the old `-o hf.repo_type` still applies to an unprefixed reference, with a
//! deprecation warning; a Space gets `hf.space_sdk`, default `static`),
//! uploads new blobs through the Git LFS batch API (up to 256 objects per
//! call, `multipart` when the Hub offers it; never base64 in a commit body),
//! then commits them in commits of at most `hf.commit_files` files (default
//! 100), and the manifest and its signature in the LAST commit. Every commit
//! names its `parentCommit`; when another commit landed meanwhile (a gc, a
//! marker, another push) the push re-reads the head, checks its blobs are
//! in that head's tree, and commits on it (see `commit`). Repository
//! layout is the `file://` layout. Blobs already in the
//! repository's tree are not uploaded again. Pushes return
//! `hf://[datasets/|spaces/]owner/repo@<commit id>`. Auth: `HF_TOKEN`, then
//! the file `$HF_TOKEN_PATH`, then `$HF_HOME/token` (as `huggingface_hub`);
//! `HF_HUB_OFFLINE` refuses all network access: a pull of a commit id or
//! `@sha256:` digest an earlier pull kept is served from the local store
//! (see `pf_registry_core::offline`); endpoint: `HF_ENDPOINT`
//! (default `https://huggingface.co`); `hf.endpoint`/`hf.token` options
//! override them (embedders, tests).

mod commit;
mod config;
mod keys;
mod transport;
mod upload;

use pf_registry_core::{Config, Engine, ImageRef, Result};

pub use config::OPTIONS;
pub use transport::HfTransport;

/// Opens an `hf://` reference on the shared engine.
pub fn open(reference: &ImageRef, config: &Config) -> Result<Engine<HfTransport>> {
    Ok(Engine::new(
        HfTransport::new(reference, config)?,
        config.clone(),
        reference.digest,
    ))
}
