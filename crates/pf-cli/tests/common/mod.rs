//! Helpers shared by the `pf` end-to-end test binaries.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `pf` with `args`, its local store at `store`, no key or trust from
/// the caller's environment, and the extra environment `env`.
#[allow(dead_code)] // Not every test binary drives pf this way.
pub fn pf_env(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env("PF_STORE", store)
        .env_remove("PF_KEY")
        .env_remove("PF_TRUST")
        .envs(env.iter().copied())
        .output()
        .expect("run pf")
}

/// A finished `pf` run's status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A Hub test server that requires `token`, and the runtime serving it
/// (both must stay alive while the test runs).
#[cfg(feature = "hf")]
#[allow(dead_code)] // Only the Hub test binaries use it.
pub fn hub_server(token: &str) -> (tokio::runtime::Runtime, pf_hub_testserver::HubServer) {
    use pf_hub_testserver::{HubConfig, HubServer};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let hub = rt
        .block_on(HubServer::start(HubConfig::with_token(token)))
        .expect("Hub test server");
    (rt, hub)
}
