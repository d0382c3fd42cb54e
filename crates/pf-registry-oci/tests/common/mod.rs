//! docker-registry in its three auth flavours as targets of the shared
//! suites. Credentials reach the client through one `$DOCKER_CONFIG` whose
//! `auths` are keyed by each registry's `host:port`, so the flavours share a
//! test binary without sharing credentials.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use pf_registry_conformance::{Backend, LargeBlobs, Route, Target};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_registry_oci::OciTransport;
use pf_testsupport::{OciAuth, OciRegistry, ServerProcess};

/// Serialises updates of the shared `config.json`.
static DOCKER_CONFIG: Mutex<()> = Mutex::new(());

/// Points `$DOCKER_CONFIG` at `dir` (call from `main`, before any thread).
/// A crash-loop child keeps its parent's.
pub fn use_docker_config(dir: &Path) {
    if pf_registry_conformance::crash::is_child() {
        return;
    }
    for k in ["PF_OCI_USERNAME", "PF_OCI_PASSWORD", "PF_OCI_TOKEN"] {
        std::env::remove_var(k);
    }
    std::env::set_var("DOCKER_CONFIG", dir);
}

/// Adds `user:password` for `host` to `$DOCKER_CONFIG/config.json`.
fn log_in(host: &str, user: &str, password: &str) {
    let _g = DOCKER_CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    let path = PathBuf::from(std::env::var_os("DOCKER_CONFIG").expect("DOCKER_CONFIG is set"))
        .join("config.json");
    let mut v: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({ "auths": {} }));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    v["auths"][host] = serde_json::json!({ "auth": auth });
    // Readers never see a half-written file: write aside, then rename.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).expect("json")).expect("write config.json");
    std::fs::rename(&tmp, &path).expect("rename config.json");
}

struct OciBackend {
    reg: OciRegistry,
    n: AtomicU32,
}

impl Backend for OciBackend {
    fn name(&self) -> String {
        format!("oci {}", self.reg.host)
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        ImageRef::parse(&format!("oci://{}/conf/{label}-{n}:v1", self.reg.host)).expect("ref")
    }
    fn config(&self) -> Config {
        Config {
            ca_file: self.reg.ca_file.clone(),
            ..Config::default()
        }
    }
    fn route(&self) -> Option<Route> {
        Some(Route::proxy(&self.reg.host))
    }
    fn through(&self, r: &ImageRef, _c: &mut Config, endpoint: &str) -> ImageRef {
        if let (Some(u), Some(p)) = (&self.reg.username, &self.reg.password) {
            log_in(endpoint, u, p);
        }
        let s = r.to_string().replacen(&self.reg.host, endpoint, 1);
        ImageRef::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn ports(&self) -> Vec<u16> {
        let port = self
            .reg
            .host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok());
        vec![port.expect("registry port")]
    }
    fn large_blobs(&self) -> LargeBlobs {
        // The "1 GiB image with 4 large blobs" figure is
        // `PF_OCI_BIG_MIB=256 PF_OCI_BIG_COUNT=4`.
        LargeBlobs {
            count: env_u64("PF_OCI_BIG_COUNT", 4),
            mib: env_u64("PF_OCI_BIG_MIB", 64),
            budget_mib: 300,
        }
    }
    fn check_large_push(&self, count: u64, size: u64) {
        let patches = self.reg.count_requests("PATCH", "/blobs/uploads/");
        eprintln!("{}: {patches} PATCH requests", self.name());
        let chunk = pf_registry_oci::CHUNK_SIZE as u64;
        assert!(
            patches as u64 >= count * (size / chunk),
            "expected chunked PATCH uploads ({patches} PATCH requests)"
        );
    }
}

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(r: &ImageRef, c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
    Ok(Box::new(OciTransport::new(r, c)?))
}

fn start(auth: OciAuth) -> OciBackend {
    let reg = OciRegistry::start(auth);
    if let (Some(u), Some(p)) = (&reg.username, &reg.password) {
        log_in(&reg.host, u, p);
    }
    OciBackend {
        reg,
        n: AtomicU32::new(0),
    }
}

/// The three flavours: `oci_anonymous`, `oci_basic_tls` (no fault proxy: a
/// proxy cannot inject HTTP faults into TLS), `oci_token`.
pub fn targets() -> Vec<Target> {
    vec![
        Target::new("oci_anonymous", open, |_| start(OciAuth::Anonymous)),
        Target::new("oci_basic_tls", open, |_| start(OciAuth::BasicTls)).without_proxy(),
        Target::new("oci_token", open, |_| start(OciAuth::Token)),
    ]
}
