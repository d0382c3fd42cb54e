//! A real Kubo node (`ipfs daemon`, built by `cargo xtask servers install`
//! into the Go peers' GOBIN, see [`crate::go`]) on loopback. Each server gets
//! a fresh repo (`ipfs init --profile test`) and runs offline: no bootstrap
//! peers, no swarm listeners, no telemetry; RPC API and HTTP gateway on free
//! 127.0.0.1 ports.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::go::go_tool;
use crate::process::{free_port, ChildServer, ServerProcess};

const INSTALL_HINT: &str = "build Kubo with `cargo xtask servers install`";

/// A running Kubo daemon. Killed on drop.
pub struct IpfsServer {
    /// RPC API base URL, `http://127.0.0.1:<port>`.
    pub api: String,
    /// HTTP gateway base URL (serves `/ipfs/<cid>`, trustless `?format=raw`).
    pub gateway: String,
    server: ChildServer,
    _dir: tempfile::TempDir,
}

impl IpfsServer {
    /// Initialises a fresh offline repo and starts the daemon; panics if it cannot.
    pub fn start() -> IpfsServer {
        let bin = go_tool("ipfs");
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let ipfs = |args: &[&str]| {
            let out = Command::new(&bin)
                .args(args)
                .env("IPFS_PATH", &repo)
                .env("IPFS_TELEMETRY", "off")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}. {INSTALL_HINT}", bin.display()));
            assert!(
                out.status.success(),
                "ipfs {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ipfs(&["init", "--profile", "test"]);
        let (api, gw) = (free_port(), free_port());
        let cfg_path = repo.join("config");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).expect("read ipfs config"))
                .expect("ipfs config json");
        cfg["Addresses"]["API"] = format!("/ip4/127.0.0.1/tcp/{api}").into();
        cfg["Addresses"]["Gateway"] = format!("/ip4/127.0.0.1/tcp/{gw}").into();
        cfg["Addresses"]["Swarm"] = serde_json::json!([]);
        cfg["Bootstrap"] = serde_json::json!([]);
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json"))
            .expect("write ipfs config");
        let mut cmd = Command::new(&bin);
        cmd.args(["daemon", "--offline"])
            .env("IPFS_PATH", &repo)
            .env("IPFS_TELEMETRY", "off");
        let server = ChildServer::spawn(
            "ipfs daemon",
            cmd,
            &dir.path().join("daemon.log"),
            api,
            INSTALL_HINT,
        );
        wait_port(gw, &server);
        IpfsServer {
            api: format!("http://127.0.0.1:{api}"),
            gateway: format!("http://127.0.0.1:{gw}"),
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

/// The API listens first; the gateway follows within moments.
fn wait_port(port: u16, server: &ChildServer) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "ipfs gateway did not listen on {addr}; log:\n{}",
        server.log_text()
    );
}
