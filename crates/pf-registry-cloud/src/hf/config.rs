//! `hf://` settings: the `hf.*` options over `HF_ENDPOINT` / `HF_TOKEN`.

use pf_registry_core::{http, Config, RegistryError, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Every option key the `hf://` backend takes.
pub const OPTIONS: &[&str] = &["hf.endpoint", "hf.token", "hf.repo_type", "hf.public"];

/// The Hub endpoint, credentials and repository settings of one transport.
pub(super) struct HfConfig {
    /// API root without a trailing `/` (`hf.endpoint`, `HF_ENDPOINT`, or huggingface.co).
    pub(super) endpoint: String,
    /// `hf.token` or `HF_TOKEN`; never printed.
    pub(super) token: Option<String>,
    /// `dataset` (default), `model` or `space`.
    pub(super) repo_type: String,
    /// Whether a created repository is public (`hf.public`, default private).
    pub(super) public: bool,
}

impl HfConfig {
    /// Reads options (which win) and the environment; checks the repo type
    /// and the plain-HTTP rule, and that no unknown key was given.
    pub(super) fn from_config(config: &Config) -> Result<HfConfig> {
        config.check_options("hf", OPTIONS)?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = config
            .option("hf.endpoint")
            .cloned()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
            .trim_end_matches('/')
            .to_string();
        let token = config
            .option("hf.token")
            .cloned()
            .or_else(|| env("HF_TOKEN"));
        let repo_type = config
            .option("hf.repo_type")
            .cloned()
            .unwrap_or_else(|| "dataset".into());
        if !matches!(repo_type.as_str(), "dataset" | "model" | "space") {
            return Err(RegistryError::invalid(
                "hf.repo_type",
                "must be dataset, model or space",
            ));
        }
        http::check_plain_http("HF_ENDPOINT", &endpoint, config.insecure)?;
        Ok(HfConfig {
            endpoint,
            token,
            repo_type,
            public: config.flag("hf.public", false),
        })
    }
}
