//! `ipfs://` settings: the RPC API address from `ipfs.api` or `IPFS_API`,
//! and an optional trustless gateway for pulls (`ipfs.gateway`).

use pf_registry_core::{http, Config, Result};

const DEFAULT_API: &str = "http://127.0.0.1:5001";

/// Every option key the `ipfs://` backend takes.
pub const OPTIONS: &[&str] = &["ipfs.api", "ipfs.gateway"];

/// The Kubo RPC API root without a trailing `/`: option `ipfs.api`, else
/// `IPFS_API`, else the local node. Plain `http://` only to loopback or
/// with `insecure`; unknown option keys are refused.
pub(super) fn api(config: &Config) -> Result<String> {
    config.check_options("ipfs", OPTIONS)?;
    let api = config
        .option("ipfs.api")
        .cloned()
        .or_else(|| std::env::var("IPFS_API").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_API.into())
        .trim_end_matches('/')
        .to_string();
    http::check_plain_http("IPFS_API", &api, config.insecure)?;
    Ok(api)
}

/// The trustless gateway root pulls go through instead of the RPC API
/// (option `ipfs.gateway`), without a trailing `/`; the same plain-HTTP rule.
pub(super) fn gateway(config: &Config) -> Result<Option<String>> {
    let Some(url) = config.options.get("ipfs.gateway") else {
        return Ok(None);
    };
    let url = url.trim_end_matches('/').to_string();
    http::check_plain_http("ipfs.gateway", &url, config.insecure)?;
    Ok(Some(url))
}
