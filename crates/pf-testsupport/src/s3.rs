//! An S3-compatible server on loopback: moto's standalone server
//! (`pip install 'moto[server]'`), which implements SigV4 request parsing,
//! multipart uploads and conditional writes (`If-None-Match`/`If-Match`) in
//! close agreement with AWS semantics.

use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, ChildServer, ServerProcess};

const INSTALL_HINT: &str =
    "install it with `pip install 'moto[server]'` (or run `cargo xtask servers install`)";

/// A running moto server with one bucket. Killed on drop.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Region to use.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// A bucket created for the test.
    pub bucket: String,
    server: ChildServer,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts moto_server and creates a bucket; panics if it cannot.
    pub fn start() -> S3Server {
        Self::start_with(false)
    }

    /// Starts moto_server with IAM authentication enforced from the first
    /// request (`INITIAL_NO_AUTH_ACTION_COUNT=0`): any unknown access key is
    /// refused with 403. No bucket is created.
    pub fn start_enforcing_auth() -> S3Server {
        Self::start_with(true)
    }

    fn start_with(enforce_auth: bool) -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let bin = which("moto_server")
            .unwrap_or_else(|| panic!("moto_server not found on PATH: {INSTALL_HINT}"));
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if enforce_auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let log = dir.path().join("moto.log");
        let server = ChildServer::spawn("moto_server", cmd, &log, port, INSTALL_HINT);
        let s = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            region: "us-east-1".into(),
            access_key: "pftestkey".into(),
            secret_key: "pftestsecret".into(),
            bucket: format!("pf-test-{}", rand::random::<u32>()),
            server,
            _dir: dir,
        };
        if !enforce_auth {
            s.create_bucket(&s.bucket.clone());
        }
        s
    }

    /// Creates another bucket (moto accepts an unsigned PUT).
    pub fn create_bucket(&self, name: &str) {
        let status = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-X",
                "PUT",
                &format!("{}/{name}", self.endpoint),
            ])
            .status()
            .expect("curl");
        assert!(status.success(), "creating bucket {name} on moto failed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl ServerProcess for S3Server {
    /// moto (its log has one line per request).
    fn process(&self) -> &ChildServer {
        &self.server
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}
