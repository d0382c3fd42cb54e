//! The `s3://bucket/prefix[:tag]` backend: a thin [`Transport`](pf_registry_core::Transport) over the
//! `object_store` crate's [`AmazonS3`](object_store::aws::AmazonS3) client, driven by the shared engine.
//!
//! # Layout under `<prefix>/`
//!
//! ```text
//! manifest.json                    manifest for the untagged reference (written LAST)
//! manifest.json.sig                its signature envelope (convenience copy)
//! tags/<tag>/manifest.json         manifest for `:<tag>` (written LAST)
//! tags/<tag>/manifest.json.sig     its signature envelope (convenience copy)
//! manifests/sha256/<hex>.json      every committed manifest, by digest (for `@sha256:` pulls)
//! signatures/sha256/<hex>.sig      every committed signature, by MANIFEST digest
//! blobs/sha256/<aa>/<hex>.zst      zstd-encoded blobs named by their RAW digest
//! ```
//!
//! # Commit order
//!
//! Every blob is durable (its PUT / multipart completion returned) before
//! `commit` runs. `commit` then reads the tag manifest's ETag, writes the
//! immutable `manifests/` and `signatures/` copies, the tag's `.sig` (or
//! deletes a stale one for an unsigned push), and finally the tag manifest.
//! Readers take the signature from `signatures/sha256/<manifest digest>.sig`
//! (the tag `.sig` only as a fallback and only when its envelope names the
//! fetched manifest), so a reader never pairs a new manifest with an old
//! signature.
//!
//! # Concurrent pushers
//!
//! The final manifest write is conditional by default: `If-Match: <etag>` on
//! the ETag read at the start of `commit`, or `If-None-Match: *` when there
//! was no manifest (object_store `PutMode::Update` / `PutMode::Create`). The
//! [`Transport`](pf_registry_core::Transport) trait has no push-start hook that could be correlated with
//! the commit of the same push, so the ETag is taken at the start of commit:
//! two commits that overlap cannot both land; the loser gets
//! [`RegistryError::Conflict`](pf_registry_core::RegistryError::Conflict) (never retried silently), unless the tag
//! already holds the very manifest it was writing (then it is `Ok`, which also
//! makes a retried commit idempotent). Commits that do not overlap are
//! last-writer-wins, like a registry tag.
//!
//! Some S3-compatible stores accept `If-None-Match` / `If-Match` and ignore
//! them. Unless `s3.conditional_put` is given, the first push to a prefix
//! probes the store ([`S3Transport::probe_conditional_put`]), caches the
//! answer in `<prefix>/.pf-probe/conditional-put` (one GET per later push;
//! delete it to probe again) and writes plain PUTs when the store does not
//! honour them. Either way the tag object
//! is one whole-object PUT written after the manifest and signature copies
//! by digest, so no reader sees a torn image: without conditional PUT the
//! guarantee left is last-writer-wins, never torn.
//!
//! # Options (`Config.options`)
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `s3.endpoint` | `AWS_ENDPOINT_URL` / `AWS_ENDPOINT` | custom endpoint (MinIO, moto, R2 …) |
//! | `s3.region` | `AWS_REGION` / `AWS_DEFAULT_REGION` / `us-east-1` | region |
//! | `s3.access_key_id`, `s3.secret_access_key`, `s3.session_token` | env | credentials for embedders; prefer the `AWS_*` env vars |
//! | `s3.virtual_hosted` | `false` with a custom endpoint, `true` on AWS | virtual-hosted vs path-style requests |
//! | `s3.conditional_put` | probed | conditional final manifest write: `true`, `false`, or `auto` (probe the store once) |
//! | `s3.part_size_mib` | `8` | multipart part size (grown to stay under 10 000 parts) |
//! | `s3.multipart_threshold_mib` | `16` | encoded size above which multipart is used |
//! | `s3.upload_parallelism` | `4` | parts in flight per multipart upload |
//! | `s3.memory_budget_mib` | `128` | cap on upload buffers held by this transport |
//! | `s3.head_threshold` | `64` | batches up to this size use HEADs, larger ones one paginated LIST of `blobs/` (cached until commit; HEADs again if LIST is denied) |
//!
//! # Errors
//!
//! Mapped from object_store error kinds, never from message text: `NotFound`
//! -> `NotFound`; `PermissionDenied` / `Unauthenticated` -> `Unauthorized`
//! naming `s3://<bucket>` (exit code 3, no credential in the message);
//! `Precondition` / `AlreadyExists` -> `Conflict`; other errors -> `Transport`,
//! retryable when the source chain holds an `io::Error`, an object_store
//! `HttpError` of kind connect / request / timeout / interrupted, or a 5xx /
//! 429 answer. Retries have one owner, the engine, with `Config.retry`:
//! object_store is configured to retry nothing, so a timed-out request is
//! retried and a final error reports every attempt.
//! object_store reports LIST failures as `Generic`, so a failed LIST is
//! followed by a HEAD of the tag manifest whose typed error decides:
//! credentials -> `Unauthorized`, otherwise the batch is checked with HEADs.
//!
//! # Credentials
//!
//! As the AWS CLI: `s3.*` options and `AWS_*` environment variables, then the
//! `AWS_PROFILE` (or `default`) profile of the shared credentials and config
//! files (static keys, `credential_process`, `region`, `endpoint_url`; see
//! `credentials.rs`), then web identity and instance metadata (object_store).
//! `role_arn` / `source_profile` profiles are refused with a clear error.
//!
//! Plain `http://` endpoints are allowed only for loopback hosts or with
//! `Config.insecure`; `Config.ca_file` adds a trusted root certificate.

mod config;
mod credentials;
mod transport;

use pf_registry_core::{Config, Engine, ImageRef, Result};

pub use config::OPTIONS;
pub use transport::S3Transport;

/// Opens an `s3://` reference as a registry on the shared engine.
pub fn open(reference: &ImageRef, config: &Config) -> Result<Engine<S3Transport>> {
    let t = S3Transport::new(reference, config)?;
    Ok(Engine::new(t, config.clone(), reference.digest))
}
