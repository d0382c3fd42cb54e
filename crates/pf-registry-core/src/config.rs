//! Settings shared by the engine and every backend.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pf_sign::{SigningKey, TrustPolicy};

use crate::progress::{NoProgress, Progress};
use crate::retry::RetryPolicy;

/// Default zstd level: fast with a good ratio on snapshot data.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default [`Config::max_blob_size`]: 256 MiB per blob with no declared size.
pub const DEFAULT_MAX_UNDECLARED_BLOB: u64 = 256 << 20;
/// Default [`Config::max_undeclared_total`]: 16 GiB per pull.
pub const DEFAULT_MAX_UNDECLARED_TOTAL: u64 = 16 << 30;

/// Settings for opening a registry and running pushes and pulls.
#[derive(Clone)]
pub struct Config {
    /// zstd level for encoding blobs (1..=22).
    pub zstd_level: i32,
    /// Blobs encoded / transferred at once. Peak memory is roughly this times
    /// the per-blob buffer, independent of image size.
    pub concurrency: usize,
    /// Retry policy for transient transport failures.
    pub retry: RetryPolicy,
    /// Keys a pulled image must be signed by; empty = report only.
    pub trust: TrustPolicy,
    /// Key used to sign pushes (when the caller builds the image with it).
    pub signing_key: Option<Arc<SigningKey>>,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
    /// Hard cap on one decoded blob whose size is not declared (the blobs a
    /// KV page index lists carry no size): decoding stops, nothing is
    /// stored and the pull fails with `InvalidData` beyond it. Blobs with a
    /// declared size must decode to exactly that size instead.
    pub max_blob_size: u64,
    /// Hard cap on the decoded bytes of all blobs with no declared size
    /// fetched by one pull, counted as they decode (so a small repository
    /// cannot make a pull write without bound).
    pub max_undeclared_total: u64,
    /// Allow plain HTTP to non-loopback hosts (OCI) and similar relaxations.
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust for TLS.
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout for network backends.
    pub timeout: Duration,
    /// Directory for temporary encoded blobs; system temp dir when `None`.
    pub spool_dir: Option<PathBuf>,
    /// Backend-specific string options (e.g. `hf.public=true`).
    pub options: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zstd_level: DEFAULT_ZSTD_LEVEL,
            concurrency: std::thread::available_parallelism()
                .map(|n| (n.get() * 2).clamp(2, 16))
                .unwrap_or(4),
            retry: RetryPolicy::default(),
            trust: TrustPolicy::default(),
            signing_key: None,
            progress: Arc::new(NoProgress),
            max_blob_size: DEFAULT_MAX_UNDECLARED_BLOB,
            max_undeclared_total: DEFAULT_MAX_UNDECLARED_TOTAL,
            insecure: false,
            ca_file: None,
            timeout: Duration::from_secs(300),
            spool_dir: None,
            options: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("zstd_level", &self.zstd_level)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("trusted_keys", &self.trust.keys().len())
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|k| k.key_id()),
            )
            .field("max_blob_size", &self.max_blob_size)
            .field("max_undeclared_total", &self.max_undeclared_total)
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// A boolean backend option (`true`/`1`/`yes`), `default` when unset.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        self.options
            .get(key)
            .map(|v| matches!(v.as_str(), "true" | "1" | "yes" | "on"))
            .unwrap_or(default)
    }
}
