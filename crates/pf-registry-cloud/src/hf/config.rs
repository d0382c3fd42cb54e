//! `hf://` settings: the `hf.*` options over `HF_ENDPOINT` / `HF_TOKEN`.

use pf_registry_core::{http, Config, RegistryError, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Every option key the `hf://` backend takes.
pub const OPTIONS: &[&str] = &[
    "hf.endpoint",
    "hf.token",
    "hf.repo_type",
    "hf.public",
    "hf.commit_files",
    "hf.space_sdk",
];

/// Most files in one commit by default (the Hub's recommendation).
pub(super) const DEFAULT_COMMIT_FILES: usize = 100;

/// Most objects in one LFS batch call (what `huggingface_hub` sends).
pub(super) const LFS_BATCH_OBJECTS: usize = 256;

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
    /// Most files per commit (`hf.commit_files`, default 100, at least 5 so
    /// the manifest and its signature copies fit one commit).
    pub(super) commit_files: usize,
    /// The SDK a created Space gets (`hf.space_sdk`, default `static`).
    pub(super) space_sdk: String,
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
        let commit_files = match config.options.get("hf.commit_files") {
            None => DEFAULT_COMMIT_FILES,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 5).ok_or_else(|| {
                RegistryError::invalid("hf.commit_files", "must be a number >= 5")
            })?,
        };
        let space_sdk = config
            .options
            .get("hf.space_sdk")
            .cloned()
            .unwrap_or_else(|| "static".into());
        if !matches!(
            space_sdk.as_str(),
            "gradio" | "streamlit" | "docker" | "static"
        ) {
            return Err(RegistryError::invalid(
                "hf.space_sdk",
                "must be gradio, streamlit, docker or static",
            ));
        }
        Ok(HfConfig {
            endpoint,
            token,
            repo_type,
            public: config.flag("hf.public", false),
            commit_files,
            space_sdk,
        })
    }
}
