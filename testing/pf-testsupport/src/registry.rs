//! CNCF distribution (Debian's `docker-registry`) on loopback, in three
//! flavours: anonymous HTTP, htpasswd Basic over TLS with a generated CA, and
//! token auth with an in-process JWT issuer (the `WWW-Authenticate: Bearer`
//! flow for real).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::process::{free_port, ChildServer, ServerProcess};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const INSTALL_HINT: &str =
    "install it with `apt-get install -y docker-registry` (or run `cargo xtask servers install`)";
/// Service name the token flavour announces.
pub const TOKEN_SERVICE: &str = "pf-test-registry";
const TOKEN_ISSUER: &str = "pf-test-issuer";

/// How the registry authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciAuth {
    /// No auth, plain HTTP.
    Anonymous,
    /// htpasswd (bcrypt) Basic auth over TLS with a test CA.
    BasicTls,
    /// Bearer token auth; tokens from an in-process issuer (plain HTTP registry).
    Token,
}

/// Which CNCF distribution release serves the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distribution {
    /// Debian's `docker-registry` (distribution 2.8).
    Debian,
    /// distribution v3's `registry`, built by `cargo xtask servers install`
    /// into the Go peers' GOBIN.
    V3,
}

/// A running registry. Killed on drop.
pub struct OciRegistry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// Username accepted (Basic/Token flavours).
    pub username: Option<String>,
    /// Password accepted (Basic/Token flavours).
    pub password: Option<String>,
    /// CA certificate (PEM) to trust (BasicTls flavour).
    pub ca_file: Option<PathBuf>,
    server: ChildServer,
    _token: Option<token::TokenServer>,
    _dir: tempfile::TempDir,
}

impl OciRegistry {
    /// Starts a registry with `auth` and filesystem storage; panics (fails
    /// the test) if it cannot.
    pub fn start(auth: OciAuth) -> OciRegistry {
        Self::start_with(auth, false)
    }

    /// Like [`start`](Self::start); `in_memory` selects distribution's
    /// in-memory storage driver (much faster for tests with many blobs).
    pub fn start_with(auth: OciAuth, in_memory: bool) -> OciRegistry {
        Self::start_advertising(auth, in_memory, None)
    }

    /// Like [`start_with`](Self::start_with), but the registry builds the
    /// URLs it hands out (upload `Location`s) on `base_url` (distribution's
    /// `http.host`) instead of the address it was reached at: a registry
    /// sending clients to another server.
    pub fn start_advertising(
        auth: OciAuth,
        in_memory: bool,
        base_url: Option<&str>,
    ) -> OciRegistry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: {INSTALL_HINT}"
        );
        Self::start_bin(Path::new(REGISTRY_BIN), auth, in_memory, base_url)
    }

    /// An anonymous registry with filesystem storage run by `flavour`'s binary.
    pub fn start_distribution(flavour: Distribution) -> OciRegistry {
        match flavour {
            Distribution::Debian => Self::start(OciAuth::Anonymous),
            Distribution::V3 => {
                let bin = crate::go::go_tool("registry");
                Self::start_bin(&bin, OciAuth::Anonymous, false, None)
            }
        }
    }

    fn start_bin(
        bin: &Path,
        auth: OciAuth,
        in_memory: bool,
        base_url: Option<&str>,
    ) -> OciRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let storage_cfg = if in_memory {
            "  inmemory:\n".to_string()
        } else {
            format!("  filesystem:\n    rootdirectory: {}\n", storage.display())
        };
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n{storage_cfg}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: pf-test-secret\n"
        );
        if let Some(url) = base_url {
            cfg.push_str(&format!("  host: {url}\n"));
        }
        let (mut username, mut password, mut ca_file, mut tok) = (None, None, None, None);
        match auth {
            OciAuth::Anonymous => {}
            OciAuth::BasicTls => {
                let user = "pfuser".to_string();
                let pass = format!("pw-{}", rand::random::<u64>());
                let hash = bcrypt::hash(&pass, 5).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
                let (ca_pem, cert_pem, key_pem) = tls_material();
                let (ca, cert, key) = (
                    dir.path().join("ca.pem"),
                    dir.path().join("cert.pem"),
                    dir.path().join("key.pem"),
                );
                std::fs::write(&ca, ca_pem).expect("ca");
                std::fs::write(&cert, cert_pem).expect("cert");
                std::fs::write(&key, key_pem).expect("key");
                cfg.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: pf-test\n    path: {}\n",
                    cert.display(),
                    key.display(),
                    htpasswd.display()
                ));
                username = Some(user);
                password = Some(pass);
                ca_file = Some(ca);
            }
            OciAuth::Token => {
                let user = "pfuser".to_string();
                let pass = format!("pw-{}", rand::random::<u64>());
                let ts = token::TokenServer::start(&user, &pass);
                let bundle = dir.path().join("token-ca.pem");
                std::fs::write(&bundle, &ts.cert_pem).expect("token cert");
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    ts.realm,
                    bundle.display()
                ));
                username = Some(user);
                password = Some(pass);
                tok = Some(ts);
            }
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("config");
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&cfg_path);
        let log = dir.path().join("registry.log");
        let server = ChildServer::spawn("docker-registry", cmd, &log, port, INSTALL_HINT);
        OciRegistry {
            host: format!("127.0.0.1:{port}"),
            username,
            password,
            ca_file,
            server,
            _token: tok,
            _dir: dir,
        }
    }

    /// Base URL (`http://` or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.host)
    }
}

impl ServerProcess for OciRegistry {
    /// The registry (its log includes the access log).
    fn process(&self) -> &ChildServer {
        &self.server
    }
}

/// (CA PEM, server cert PEM signed by the CA for 127.0.0.1/localhost, server key PEM).
pub fn tls_material() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pf-registry test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = p.signed_by(&key, &issuer).expect("server cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

mod token {
    //! A minimal Docker token issuer: checks Basic credentials and returns an
    //! ES256 JWT with an `x5c` header whose certificate is in the registry's
    //! `rootcertbundle`, granting the requested repository actions.
    use super::*;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use std::sync::Arc;

    struct Issuer {
        user: String,
        pass: String,
        key: EcdsaKeyPair,
        cert_der: Vec<u8>,
    }

    pub struct TokenServer {
        pub realm: String,
        pub cert_pem: String,
        shutdown: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl TokenServer {
        pub fn start(user: &str, pass: &str) -> TokenServer {
            let kp = KeyPair::generate().expect("token key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "pf-test token signer");
            let cert = params.self_signed(&kp).expect("token cert");
            let rng = ring::rand::SystemRandom::new();
            let key = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &kp.serialize_der(),
                &rng,
            )
            .expect("ring key");
            let issuer = Arc::new(Issuer {
                user: user.into(),
                pass: pass.into(),
                key,
                cert_der: cert.der().to_vec(),
            });
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token server");
            listener.set_nonblocking(true).expect("nonblocking");
            let port = listener.local_addr().expect("addr").port();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let app = axum::Router::new()
                        .route("/token", get(token))
                        .with_state(issuer);
                    let _ = axum::serve(l, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            });
            TokenServer {
                realm: format!("http://127.0.0.1:{port}/token"),
                cert_pem: cert.pem(),
                shutdown: Some(tx),
                thread: Some(thread),
            }
        }
    }

    impl Drop for TokenServer {
        fn drop(&mut self) {
            if let Some(tx) = self.shutdown.take() {
                let _ = tx.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    async fn token(
        State(iss): State<Arc<Issuer>>,
        headers: HeaderMap,
        Query(q): Query<Vec<(String, String)>>,
    ) -> Response {
        let authorized = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|up| up == format!("{}:{}", iss.user, iss.pass));
        if !authorized {
            return (
                StatusCode::UNAUTHORIZED,
                "{\"details\":\"invalid credentials\"}",
            )
                .into_response();
        }
        let mut access = Vec::new();
        for (k, v) in &q {
            if k != "scope" {
                continue;
            }
            for scope in v.split(' ') {
                let parts: Vec<&str> = scope.splitn(3, ':').collect();
                if parts.len() == 3 {
                    access.push(serde_json::json!({
                        "type": parts[0], "name": parts[1],
                        "actions": parts[2].split(',').collect::<Vec<_>>(),
                    }));
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&iss.cert_der)]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": iss.user, "aud": TOKEN_SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{}", rand::random::<u64>()), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let Ok(sig) = iss.key.sign(&rng, signing_input.as_bytes()) else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response();
        };
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        axum::Json(serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}))
            .into_response()
    }
}
