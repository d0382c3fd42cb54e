//! Settings shared by the engine and every backend.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pf_sign::TrustPolicy;

use crate::error::{RegistryError, Result};
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
    /// Network timeout: for the HTTP backends (OCI, HF, IPFS) an idle
    /// timeout per read, so a large stream runs as long as bytes flow (the
    /// connect timeout is at most 30 s); for S3, object_store's request
    /// timeout and retry deadline.
    pub timeout: Duration,
    /// Directory for temporary encoded blobs; system temp dir when `None`.
    pub spool_dir: Option<PathBuf>,
    /// Backend-specific string options (e.g. `hf.public=true`). Each backend
    /// takes only its own keys (see [`check_options`](Self::check_options)).
    pub options: BTreeMap<String, String>,
    /// Options from the environment (e.g. the CLI's `PF_OPTION_*`): a
    /// backend uses those it takes, when [`options`](Self::options) does
    /// not set them, and ignores the others (one environment serves every
    /// backend; a typo on the command line is still an error).
    pub env_options: BTreeMap<String, String>,
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
            progress: Arc::new(NoProgress),
            max_blob_size: DEFAULT_MAX_UNDECLARED_BLOB,
            max_undeclared_total: DEFAULT_MAX_UNDECLARED_TOTAL,
            insecure: false,
            ca_file: None,
            timeout: Duration::from_secs(300),
            spool_dir: None,
            options: BTreeMap::new(),
            env_options: BTreeMap::new(),
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
            .field("max_blob_size", &self.max_blob_size)
            .field("max_undeclared_total", &self.max_undeclared_total)
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("env_options", &self.env_options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// The value of backend option `key`: from [`options`](Self::options),
    /// else from [`env_options`](Self::env_options).
    pub fn option(&self, key: &str) -> Option<&String> {
        self.options.get(key).or_else(|| self.env_options.get(key))
    }

    /// A boolean backend option (`true`/`1`/`yes`), `default` when unset.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        self.option(key)
            .map(|v| matches!(v.as_str(), "true" | "1" | "yes" | "on"))
            .unwrap_or(default)
    }

    /// Checks that every key of [`options`](Self::options) is one the
    /// `scheme` backend takes (`valid`): an unknown key, or one for another
    /// backend, is [`RegistryError::BadOption`] listing the valid keys.
    /// Backends call this when they are opened, so a mistyped key is never
    /// ignored. [`env_options`](Self::env_options) are not checked.
    pub fn check_options(&self, scheme: &str, valid: &[&str]) -> Result<()> {
        match self.options.keys().find(|k| !valid.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => Err(RegistryError::BadOption {
                key: key.clone(),
                scheme: scheme.to_string(),
                valid: valid.iter().map(|v| v.to_string()).collect(),
            }),
        }
    }

    /// A copy keeping only the options in `valid` (for one side of a copy
    /// between two backends).
    pub fn only_options(&self, valid: &[&str]) -> Config {
        let mut c = self.clone();
        c.options.retain(|k, _| valid.contains(&k.as_str()));
        c.env_options.retain(|k, _| valid.contains(&k.as_str()));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_against_the_backend_keys() {
        let mut c = Config::default();
        assert!(c.check_options("file", &[]).is_ok());
        c.options.insert("hf.public".into(), "true".into());
        assert!(c.check_options("hf", &["hf.public", "hf.token"]).is_ok());
        let e = c
            .check_options("s3", &["s3.region", "s3.endpoint"])
            .unwrap_err();
        assert!(matches!(&e, RegistryError::BadOption { key, .. } if key == "hf.public"));
        assert_eq!(
            e.to_string(),
            "unknown option \"hf.public\" for s3://; valid options: s3.region, s3.endpoint"
        );
        let e = c.check_options("file", &[]).unwrap_err().to_string();
        assert!(e.ends_with("valid options: none"), "{e}");
        c.options.insert("s3.region".into(), "x".into());
        let only = c.only_options(&["s3.region"]);
        assert_eq!(only.options.keys().collect::<Vec<_>>(), ["s3.region"]);
    }

    #[test]
    fn environment_options_fill_in_and_are_not_checked() {
        let mut c = Config::default();
        c.env_options.insert("hf.token".into(), "env".into());
        c.env_options.insert("hf.public".into(), "yes".into());
        assert!(c.check_options("file", &[]).is_ok());
        assert_eq!(c.option("hf.token").map(String::as_str), Some("env"));
        assert!(c.flag("hf.public", false));
        c.options.insert("hf.token".into(), "cli".into());
        assert_eq!(c.option("hf.token").map(String::as_str), Some("cli"));
        assert!(
            !format!("{c:?}").contains("env\""),
            "values are not printed"
        );
    }
}
