//! `hf://` settings: the `hf.*` options over the environment the official
//! `huggingface_hub` client reads (`HF_ENDPOINT`, `HF_TOKEN`,
//! `HF_TOKEN_PATH`, `HF_HOME`, `HF_HUB_OFFLINE`).

use std::path::PathBuf;

use pf_registry_core::{http, Config, HfRepoType, RegistryError, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Every option key the `hf://` backend takes (`hf.repo_type` is
/// deprecated: the reference names the type, `hf://datasets/owner/repo`).
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
    /// The token (see [`find_token`]); never printed.
    pub(super) token: Option<String>,
    /// Where the token came from, or where pf looked for one (for messages).
    pub(super) token_source: String,
    /// `model`, `dataset` or `space`.
    pub(super) repo_type: String,
    /// Whether a created repository is public (`hf.public`, default private).
    pub(super) public: bool,
    /// Most files per commit (`hf.commit_files`, default 100, at least 5 so
    /// the manifest and its signature copies fit one commit).
    pub(super) commit_files: usize,
    /// The SDK a created Space gets (`hf.space_sdk`, default `static`).
    pub(super) space_sdk: String,
    /// `HF_HUB_OFFLINE`: no request leaves pf; pinned pulls are served
    /// from the local store.
    pub(super) offline: bool,
}

/// A token and a description of where it came from (or where pf looked).
pub(super) struct FoundToken {
    /// The token, if any.
    pub(super) token: Option<String>,
    /// e.g. `HF_TOKEN`, `the token file /root/.cache/huggingface/token`.
    pub(super) source: String,
}

/// The token in the order `huggingface_hub` reads it: `HF_TOKEN`, then the
/// file `$HF_TOKEN_PATH`, else `$HF_HOME/token` (`HF_HOME` defaults to
/// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`). A missing or
/// empty file means no token; an unreadable one, or one holding more than
/// one line, is an error naming the file (never its content).
pub(super) fn find_token(env: &dyn Fn(&str) -> Option<String>) -> Result<FoundToken> {
    if let Some(t) = env("HF_TOKEN").filter(|t| !t.trim().is_empty()) {
        return Ok(FoundToken {
            token: Some(t.trim().to_string()),
            source: "HF_TOKEN".into(),
        });
    }
    let path = env("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
        let home = env("HF_HOME").map(PathBuf::from).or_else(|| {
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("huggingface"))
        })?;
        Some(home.join("token"))
    });
    let Some(path) = path else {
        return Ok(FoundToken {
            token: None,
            source: "HF_TOKEN (unset; no HF_TOKEN_PATH, HF_HOME or HOME to find a token file)"
                .into(),
        });
    };
    let looked = format!("HF_TOKEN (unset) and the token file {}", path.display());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FoundToken {
                token: None,
                source: format!("{looked} (not found)"),
            })
        }
        Err(e) => {
            return Err(RegistryError::io(
                format!("reading the Hub token file {}", path.display()),
                e,
            ))
        }
    };
    let token = text.trim();
    if token.is_empty() {
        return Ok(FoundToken {
            token: None,
            source: format!("{looked} (empty)"),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RegistryError::Unauthorized {
            registry: "hf://".into(),
            detail: format!(
                "the token file {} does not hold one token (it has several words or lines)",
                path.display()
            ),
        });
    }
    Ok(FoundToken {
        token: Some(token.to_string()),
        source: format!("the token file {}", path.display()),
    })
}

/// Whether `HF_HUB_OFFLINE` asks for no network (as `huggingface_hub`: 1, ON, YES, TRUE).
pub(super) fn offline(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

impl HfConfig {
    /// Reads options (which win) and the environment for a repository of
    /// `ref_type`; checks the repo type and the plain-HTTP rule, and that no
    /// unknown key was given.
    pub(super) fn from_config(config: &Config, ref_type: HfRepoType) -> Result<HfConfig> {
        Self::from_env(config, ref_type, &|k| std::env::var(k).ok())
    }

    pub(super) fn from_env(
        config: &Config,
        ref_type: HfRepoType,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HfConfig> {
        config.check_options("hf", OPTIONS)?;
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let endpoint = config
            .option("hf.endpoint")
            .cloned()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
            .trim_end_matches('/')
            .to_string();
        let repo_type = match config.option("hf.repo_type") {
            None => ref_type,
            Some(v) => {
                let t = HfRepoType::from_name(v).ok_or_else(|| {
                    RegistryError::invalid("hf.repo_type", "must be dataset, model or space")
                })?;
                tracing::warn!(
                    "-o hf.repo_type is deprecated: write the type in the reference, \
                     hf://{}owner/repo",
                    t.url_prefix()
                );
                match ref_type {
                    HfRepoType::Model => t,
                    _ if ref_type == t => t,
                    _ => {
                        return Err(RegistryError::invalid(
                            "hf.repo_type",
                            format!(
                                "{v} contradicts the reference, which names a {}",
                                ref_type.as_str()
                            ),
                        ))
                    }
                }
            }
        };
        let found = match config.option("hf.token") {
            Some(t) => FoundToken {
                token: Some(t.clone()),
                source: "the hf.token option".into(),
            },
            None => find_token(&env)?,
        };
        http::check_plain_http("HF_ENDPOINT", &endpoint, config.insecure)?;
        let commit_files = match config.option("hf.commit_files") {
            None => DEFAULT_COMMIT_FILES,
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 5).ok_or_else(|| {
                RegistryError::invalid("hf.commit_files", "must be a number >= 5")
            })?,
        };
        let space_sdk = config
            .option("hf.space_sdk")
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
            token: found.token,
            token_source: found.source,
            repo_type: repo_type.as_str().into(),
            public: config.flag("hf.public", false),
            commit_files,
            space_sdk,
            offline: offline(&env),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "hf_SeCrEtTokenValue123";

    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn cfg(env: &dyn Fn(&str) -> Option<String>) -> Result<HfConfig> {
        HfConfig::from_env(&Config::default(), HfRepoType::Model, env)
    }

    #[test]
    fn token_order_env_then_token_path_then_hf_home() {
        let dir = tempfile::tempdir().unwrap();
        let home_tok = dir.path().join("hfhome/token");
        std::fs::create_dir_all(home_tok.parent().unwrap()).unwrap();
        std::fs::write(&home_tok, "hf_from_home\n").unwrap();
        let path_tok = dir.path().join("custom");
        std::fs::write(&path_tok, "hf_from_path\n").unwrap();
        let hf_home = ("HF_HOME", dir.path().join("hfhome").display().to_string());
        let token_path = ("HF_TOKEN_PATH", path_tok.display().to_string());

        let c = cfg(&env_of(std::slice::from_ref(&hf_home))).unwrap();
        assert_eq!(c.token.as_deref(), Some("hf_from_home"));
        assert!(c.token_source.contains(&home_tok.display().to_string()));
        let c = cfg(&env_of(&[hf_home.clone(), token_path.clone()])).unwrap();
        assert_eq!(c.token.as_deref(), Some("hf_from_path"));
        let c = cfg(&env_of(&[
            hf_home,
            token_path,
            ("HF_TOKEN", "hf_env".into()),
        ]))
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("hf_env"));
        assert_eq!(c.token_source, "HF_TOKEN");
        // Default HF_HOME: $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
        let home = dir.path().join("h");
        std::fs::create_dir_all(home.join(".cache/huggingface")).unwrap();
        std::fs::write(home.join(".cache/huggingface/token"), "hf_default").unwrap();
        let c = cfg(&env_of(&[("HOME", home.display().to_string())])).unwrap();
        assert_eq!(c.token.as_deref(), Some("hf_default"));
        let c = cfg(&env_of(&[
            ("HOME", home.display().to_string()),
            (
                "XDG_CACHE_HOME",
                dir.path().join("none").display().to_string(),
            ),
        ]))
        .unwrap();
        assert_eq!(c.token, None);
    }

    #[test]
    fn missing_or_bad_token_file_says_where_pf_looked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/token");
        let c = cfg(&env_of(&[("HF_TOKEN_PATH", missing.display().to_string())])).unwrap();
        assert_eq!(c.token, None);
        assert!(
            c.token_source.contains(&missing.display().to_string()),
            "{}",
            c.token_source
        );
        assert!(c.token_source.contains("not found"), "{}", c.token_source);
        // Two lines: refused, naming the file, not printing the content.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, format!("{SECRET}\nsecond line\n")).unwrap();
        let Err(e) = cfg(&env_of(&[("HF_TOKEN_PATH", bad.display().to_string())])) else {
            panic!("accepted a two-line token file");
        };
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(text.contains(&bad.display().to_string()), "{text}");
            assert!(!text.contains(SECRET), "{text}");
        }
        // Empty file: no token.
        std::fs::write(&bad, "\n").unwrap();
        let c = cfg(&env_of(&[("HF_TOKEN_PATH", bad.display().to_string())])).unwrap();
        assert_eq!(c.token, None);
        assert!(c.token_source.contains("empty"));
    }

    #[test]
    fn offline_switch_values() {
        for v in ["1", "true", "ON", "yes"] {
            assert!(
                cfg(&env_of(&[("HF_HUB_OFFLINE", v.into())]))
                    .unwrap()
                    .offline
            );
        }
        for v in ["0", "", "false"] {
            assert!(
                !cfg(&env_of(&[("HF_HUB_OFFLINE", v.into())]))
                    .unwrap()
                    .offline
            );
        }
        assert!(!cfg(&env_of(&[])).unwrap().offline);
    }

    #[test]
    fn deprecated_repo_type_option() {
        let mut config = Config::default();
        config
            .options
            .insert("hf.repo_type".into(), "dataset".into());
        let env = env_of(&[]);
        // Old spelling: hf://owner/repo + -o hf.repo_type=dataset still a dataset.
        let c = HfConfig::from_env(&config, HfRepoType::Model, &env).unwrap();
        assert_eq!(c.repo_type, "dataset");
        let c = HfConfig::from_env(&config, HfRepoType::Dataset, &env).unwrap();
        assert_eq!(c.repo_type, "dataset");
        let Err(e) = HfConfig::from_env(&config, HfRepoType::Space, &env) else {
            panic!("contradiction accepted");
        };
        assert!(e.to_string().contains("contradicts"), "{e}");
        // Without the option, the reference decides.
        let c = HfConfig::from_env(&Config::default(), HfRepoType::Space, &env).unwrap();
        assert_eq!(c.repo_type, "space");
    }
}
