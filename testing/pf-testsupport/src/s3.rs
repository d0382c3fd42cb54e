//! S3 servers on loopback: a real object store (SeaweedFS,
//! [`S3Server::start_seaweedfs`]) for the conformance suite and crash loop,
//! and moto (fault injection and IAM edge cases). Moto's standalone server
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

    /// Creates another bucket with a SigV4-signed PUT (moto also accepts
    /// it unsigned; SeaweedFS needs the signature).
    pub fn create_bucket(&self, name: &str) {
        let user = format!("{}:{}", self.access_key, self.secret_key);
        let sigv4 = format!("aws:amz:{}:s3", self.region);
        let status = Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "--aws-sigv4",
                &sigv4,
                "--user",
                &user,
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

impl S3Server {
    /// Starts a REAL object store: a single-node SeaweedFS (`weed server`
    /// with its S3 gateway) on free loopback ports, with one identity
    /// holding the test credentials, and creates a bucket. The binary is
    /// `$PF_GOBIN/weed` (default `/opt/pf-go/bin/weed`, built by `cargo
    /// xtask servers install`) or `weed` on PATH. Panics if it cannot start.
    pub fn start_seaweedfs() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let gobin = std::env::var_os("PF_GOBIN")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/opt/pf-go/bin".into());
        let bin = Some(gobin.join("weed"))
            .filter(|p| p.is_file())
            .or_else(|| which("weed"))
            .unwrap_or_else(|| panic!("SeaweedFS `weed` not found: {WEED_HINT}"));
        let (access_key, secret_key) = ("pfseaweedkey".to_string(), "pfseaweedsecret".to_string());
        let s3_config = dir.path().join("s3.json");
        let identities = format!(
            r#"{{"identities":[{{"name":"pf","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(&s3_config, identities).expect("write s3.json");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let p: Vec<String> = (0..8).map(|_| free_port().to_string()).collect();
        let s3_port: u16 = p[6].parse().expect("port");
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg("-volume.max=16")
            .arg("-filer")
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg("-s3")
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-s3.config={}", s3_config.display()));
        let server = ChildServer::spawn(
            "SeaweedFS",
            cmd,
            &dir.path().join("weed.log"),
            s3_port,
            WEED_HINT,
        );
        let s = S3Server {
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "us-east-1".into(),
            access_key,
            secret_key,
            bucket: format!("pf-test-{}", rand::random::<u32>()),
            server,
            _dir: dir,
        };
        // The gateway listens before the filer and a volume are ready:
        // retry the bucket creation until the store takes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if s.try_create_bucket(&s.bucket) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SeaweedFS never accepted a bucket; log:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        s
    }

    fn try_create_bucket(&self, name: &str) -> bool {
        let user = format!("{}:{}", self.access_key, self.secret_key);
        let sigv4 = format!("aws:amz:{}:s3", self.region);
        Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "--aws-sigv4",
                &sigv4,
                "--user",
                &user,
            ])
            .args(["-X", "PUT", &format!("{}/{name}", self.endpoint)])
            .status()
            .is_ok_and(|s| s.success())
    }
}

const WEED_HINT: &str = "build it with `cargo xtask servers install` (SeaweedFS from the Go module proxy into /opt/pf-go/bin)";

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}
