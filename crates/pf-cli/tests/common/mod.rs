//! Helpers shared by the `pf` end-to-end test binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `pf` with `args`, its local store at `store`, no key, trust or
/// identity from the caller's environment, and the extra environment `env`.
#[allow(dead_code)] // Not every test binary drives pf this way.
pub fn pf_env(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(args)
        .env("PF_STORE", store)
        .env_remove("PF_KEY")
        .env_remove("PF_TRUST")
        .env_remove("PF_IDENTITY")
        .envs(env.iter().copied())
        .output()
        .expect("run pf")
}

/// A finished `pf` run's status, stdout and stderr, for assertion messages.
#[allow(dead_code)] // Not every test binary prints runs this way.
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

/// A temporary directory for one test: its stores, repositories and trees
/// are paths below it.
#[allow(dead_code)] // Not every test binary uses every method.
pub struct Env {
    /// The directory (removed when the test ends).
    pub tmp: tempfile::TempDir,
}

#[allow(dead_code)]
impl Env {
    /// A fresh temporary directory.
    pub fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }
    /// `p` below the directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    /// The `file://` repository `name` below the directory.
    pub fn repo(&self, name: &str) -> String {
        format!("file://{}", self.path(name).display())
    }
    /// `pf` with its local store at `store` below the directory (see
    /// [`pf_env`]).
    pub fn pf_in(&self, store: &str, args: &[&str]) -> Output {
        pf_env(&self.path(store), args, &[])
    }
}
