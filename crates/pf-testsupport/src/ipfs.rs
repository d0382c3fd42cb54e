//! A real IPFS node speaking the Kubo HTTP RPC API on loopback: js-ipfs
//! (npm `ipfs@0.66.1`, the JavaScript implementation of the same RPC API),
//! installed by `cargo xtask servers install` into `/opt/pf-jsipfs`. Kubo
//! itself ships only as a binary download, which this environment cannot
//! fetch. The node runs offline: no bootstrap peers, no swarm listeners,
//! API, gateway and gRPC on random loopback ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{free_port, ChildServer, ServerProcess};

/// Where `cargo xtask servers install` puts js-ipfs.
pub const JSIPFS_DIR: &str = "/opt/pf-jsipfs";
const INSTALL_HINT: &str = "install it with `cargo xtask servers install` (npm install --prefix /opt/pf-jsipfs ipfs@0.66.1)";
/// js-ipfs 0.66's dependencies call `Promise.withResolvers` (Node 22); this
/// polyfill lets it run on Node 20.
const POLYFILL: &str = "if (typeof Promise.withResolvers !== 'function') { Promise.withResolvers = function () { let resolve, reject; const promise = new Promise((a, b) => { resolve = a; reject = b }); return { promise, resolve, reject } } }\n";

/// A running js-ipfs daemon. Killed on drop.
pub struct IpfsServer {
    /// RPC API base URL, `http://127.0.0.1:<port>`.
    pub api: String,
    server: ChildServer,
    _dir: tempfile::TempDir,
}

fn jsipfs_bin() -> PathBuf {
    Path::new(JSIPFS_DIR).join("node_modules/.bin/jsipfs")
}

impl IpfsServer {
    /// Initialises a fresh offline repo and starts the daemon; panics if it cannot.
    pub fn start() -> IpfsServer {
        let bin = jsipfs_bin();
        assert!(bin.exists(), "{} is missing: {INSTALL_HINT}", bin.display());
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let polyfill = dir.path().join("polyfill.cjs");
        std::fs::write(&polyfill, POLYFILL).expect("polyfill");
        let node_options = format!("--require {}", polyfill.display());
        let out = Command::new(&bin)
            .args(["init", "--empty-repo"])
            .env("IPFS_PATH", &repo)
            .env("NODE_OPTIONS", &node_options)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}. {INSTALL_HINT}", bin.display()));
        assert!(
            out.status.success(),
            "jsipfs init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (api, gw, rpc) = (free_port(), free_port(), free_port());
        let cfg_path = repo.join("config");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("read ipfs config"))
                .expect("ipfs config json");
        cfg["Addresses"]["API"] = format!("/ip4/127.0.0.1/tcp/{api}").into();
        cfg["Addresses"]["Gateway"] = format!("/ip4/127.0.0.1/tcp/{gw}").into();
        cfg["Addresses"]["RPC"] = format!("/ip4/127.0.0.1/tcp/{rpc}").into();
        cfg["Addresses"]["Swarm"] = serde_json::json!([]);
        cfg["Addresses"]["Delegates"] = serde_json::json!([]);
        cfg["Bootstrap"] = serde_json::json!([]);
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write ipfs config");
        let mut cmd = Command::new(&bin);
        cmd.args(["daemon", "--offline"])
            .env("IPFS_PATH", &repo)
            .env("NODE_OPTIONS", &node_options);
        let log = dir.path().join("daemon.log");
        let server = ChildServer::spawn("jsipfs daemon", cmd, &log, api, INSTALL_HINT);
        IpfsServer {
            api: format!("http://127.0.0.1:{api}"),
            server,
            _dir: dir,
        }
    }
}

impl ServerProcess for IpfsServer {
    /// The daemon.
    fn process(&self) -> &ChildServer {
        &self.server
    }
}
