//! Fault injection between the client and the REAL servers of the cloud
//! backends (moto for S3, the Hub test server for HF, js-ipfs for IPFS):
//!
//! * transient faults (500/502/503, 429 + `Retry-After`, connections cut
//!   mid-body) are retried: push and pull succeed and the pulled blobs equal
//!   the source;
//! * flipped bytes in a downloaded blob are never accepted: the pull fails
//!   with an integrity error and no corrupt blob lands in the store;
//! * a server that keeps failing gives a typed error quickly (no panic, no
//!   hang) and the previously pushed version stays pullable and verified.
//!
//! [`FaultProxy`] sits between the client and the server. The Hub has two
//! origins (the API and an LFS storage origin reached through absolute URLs
//! the API hands out), so the HF route puts a proxy in front of each and a
//! small rewriting relay behind the API proxy that points those absolute
//! URLs at the proxies: every byte of an HF push or pull crosses a proxy.
#![cfg(any(feature = "s3", feature = "hf", feature = "ipfs"))]

#[cfg(feature = "s3")]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::{ImageSpec, TestImage};
use pf_registry_core::{
    Config, Digest, PullReport, Registry, RegistryError, RetryPolicy, SignedImage, SigningKey,
    TrustPolicy, Verification,
};
use pf_testsupport::{Fault, FaultProxy};
use rand::{RngExt, SeedableRng};

/// Response offset (per connection) at which blob bytes are flipped: past
/// the manifest and signature responses, inside the first (96 KiB) layer.
const FLIP_AT: usize = 40_000;
/// Upper bound on any single scenario step; a hang fails the test.
const STEP_LIMIT: Duration = Duration::from_secs(90);

/// The transient faults every proxy of a route gets, once for the push and
/// once for the pull. Each one closes its connection, so the client has to
/// reconnect and runs into the next.
fn transient_script() -> Vec<Fault> {
    vec![
        Fault::Status(503),
        Fault::Status(502),
        Fault::TooManyRequests(1),
        Fault::CutAfter(300),
        Fault::Status(500),
        Fault::CutAfter(FLIP_AT),
    ]
}

/// Proxies in front of one server for one scenario.
struct Route {
    /// Every proxy the traffic crosses.
    proxies: Vec<FaultProxy>,
    /// Index of the proxy carrying blob downloads.
    blob_proxy: usize,
    /// Base URL the client should use instead of the server's.
    endpoint: String,
    /// Keeps helpers (the HF rewriting relay) alive.
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Route {
    fn script_all(&self, script: &[Fault]) {
        for p in &self.proxies {
            p.push(script.iter().cloned());
        }
    }
    fn injected(&self) -> usize {
        self.proxies.iter().map(FaultProxy::injected).sum()
    }
    fn pending(&self) -> usize {
        self.proxies.iter().map(FaultProxy::pending).sum()
    }
}

/// One backend on a real server.
trait Fixture {
    fn name(&self) -> &'static str;
    /// A reference to push `label` to.
    fn push_ref(&self, label: &str) -> String;
    /// The reference that pulls what a push to `pushed` made (`resolved` is
    /// what the push returned).
    fn pull_ref(&self, pushed: &str, _resolved: &str) -> String {
        pushed.to_string()
    }
    /// Fresh proxies in front of the server.
    fn route(&self) -> Route;
    /// The registry for `reference`, through `route` or directly.
    fn open(&self, reference: &str, cfg: &Config, route: Option<&Route>) -> Box<dyn Registry>;
}

fn parse(r: &str) -> pf_registry_core::ImageRef {
    pf_registry_core::ImageRef::parse(r).unwrap_or_else(|e| panic!("ref {r}: {e}"))
}

/// An image whose first layer is large and incompressible, so that
/// [`FLIP_AT`] lands inside its body and cuts happen mid-body.
fn image(seed: u64, src: &MemoryStore, name: &str) -> TestImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut spec = ImageSpec::sample(seed, 6);
    spec.layers = [96 << 10, 24 << 10]
        .iter()
        .map(|&n| (0..n).map(|_| rng.random()).collect())
        .collect();
    spec.build(src, name)
}

fn fast_retries() -> Config {
    Config {
        retry: RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
        },
        concurrency: 2,
        timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

fn trusting(mut cfg: Config, key: &SigningKey) -> Config {
    cfg.trust = TrustPolicy::new(vec![key.public_key()]);
    cfg
}

fn key() -> SigningKey {
    SigningKey::generate().expect("generate a signing key")
}

/// Every blob in `store` re-hashes to the digest it is stored under.
fn all_blobs_verify(store: &MemoryStore) {
    for d in store.list().expect("list") {
        assert_eq!(
            Digest::of(&store.get(&d).expect("get")),
            d,
            "the store holds a corrupt blob under {d}"
        );
    }
}

/// The pull returned `img`, verified by `key`, and `dst` holds its whole
/// closure, byte-identical to `src`.
fn assert_pulled(
    rep: &PullReport,
    img: &TestImage,
    key: &SigningKey,
    src: &MemoryStore,
    dst: &MemoryStore,
) {
    assert_eq!(rep.manifest, img.manifest, "pulled another manifest");
    assert!(
        matches!(&rep.verification, Verification::Verified { key_id } if *key_id == key.key_id()),
        "not verified: {:?}",
        rep.verification
    );
    for d in &img.closure {
        assert_eq!(
            dst.get(d)
                .unwrap_or_else(|e| panic!("{d} missing after pull: {e}")),
            src.get(d).expect("source blob"),
            "blob {d} differs from the source"
        );
    }
    all_blobs_verify(dst);
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for more than {STEP_LIMIT:?}"))
}

/// (a) transient faults on every proxy, for the push and again for the pull.
async fn transient_faults_are_retried(fx: &dyn Fixture) {
    let route = fx.route();
    let script = transient_script();
    let src = Arc::new(MemoryStore::new());
    let img = image(81, &src, "transient");
    let key = key();
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let cfg = trusting(fast_retries(), &key);
    let pushed = fx.push_ref("transient");

    route.script_all(&script);
    let rep = bounded(
        "push through faults",
        fx.open(&pushed, &cfg, Some(&route))
            .push(src.clone(), &signed),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: push through transient faults failed: {e}", fx.name()));
    assert_eq!(rep.manifest_digest, signed.digest());
    assert_eq!(
        route.pending(),
        0,
        "{}: the push ended before meeting every fault",
        fx.name()
    );
    let after_push = route.injected();
    assert_eq!(after_push, script.len() * route.proxies.len());

    route.script_all(&script);
    let dst = Arc::new(MemoryStore::new());
    let pulled = bounded(
        "pull through faults",
        fx.open(&fx.pull_ref(&pushed, &rep.resolved), &cfg, Some(&route))
            .pull(dst.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: pull through transient faults failed: {e}", fx.name()));
    assert_pulled(&pulled, &img, &key, &src, &dst);
    assert_eq!(
        route.pending(),
        0,
        "{}: the pull ended before meeting every fault",
        fx.name()
    );
    assert_eq!(route.injected(), 2 * after_push);
}

/// (b) one byte flipped in every blob download: never accepted.
async fn flipped_blob_bytes_are_never_accepted(fx: &dyn Fixture) {
    let route = fx.route();
    let src = Arc::new(MemoryStore::new());
    let img = image(82, &src, "flip");
    let key = key();
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let pushed = fx.push_ref("flip");
    let rep = bounded(
        "clean push",
        fx.open(&pushed, &Config::default(), None)
            .push(src.clone(), &signed),
    )
    .await
    .expect("clean push");
    let pull_ref = fx.pull_ref(&pushed, &rep.resolved);

    route.proxies[route.blob_proxy].push(vec![Fault::FlipAt(FLIP_AT); 64]);
    // One blob at a time, so the flip lands in the first (large) layer.
    let cfg = Config {
        concurrency: 1,
        ..trusting(fast_retries(), &key)
    };
    let dst = Arc::new(MemoryStore::new());
    let first_layer = img.manifest.layers[0].digest;
    let outcome = bounded(
        "pull with flipped bytes",
        fx.open(&pull_ref, &cfg, Some(&route)).pull(dst.clone()),
    )
    .await;
    eprintln!(
        "{}: pull with flipped bytes: {:?}",
        fx.name(),
        outcome.as_ref().map(|r| r.manifest_digest)
    );
    match outcome {
        Err(RegistryError::Integrity {
            expected, actual, ..
        }) => {
            assert_ne!(expected, actual);
            assert!(
                img.closure.contains(&expected),
                "integrity error names {expected}, not a closure blob"
            );
        }
        // A flipped byte inside the zstd frame: the decoder refuses it (exit code 4).
        Err(RegistryError::InvalidData { .. }) => {}
        Err(e) => panic!(
            "{}: flipped blob bytes must be an integrity error, got {e:?}",
            fx.name()
        ),
        // Allowed only if a retry fetched clean bytes; then they must be right.
        Ok(rep) => assert_pulled(&rep, &img, &key, &src, &dst),
    }
    assert!(
        route.proxies[route.blob_proxy].injected() > 0,
        "{}: no flip was injected",
        fx.name()
    );
    all_blobs_verify(&dst);
    assert!(
        !dst.has(&first_layer).expect("has"),
        "{}: the corrupted first layer landed in the store",
        fx.name()
    );

    // The same store then completes from the untouched server.
    let ok = bounded(
        "clean pull",
        fx.open(&pull_ref, &trusting(Config::default(), &key), None)
            .pull(dst.clone()),
    )
    .await
    .expect("clean pull after the corrupted one");
    assert_pulled(&ok, &img, &key, &src, &dst);
}

/// (c) a server that keeps failing: a typed error, soon; v1 survives.
async fn permanent_failure_is_typed_and_previous_version_survives(fx: &dyn Fixture) {
    let route = fx.route();
    let src = Arc::new(MemoryStore::new());
    let v1 = image(83, &src, "v1");
    let v2 = image(84, &src, "v2");
    let key = key();
    let pushed = fx.push_ref("keep");
    let rep1 = bounded(
        "push v1",
        fx.open(&pushed, &Config::default(), None)
            .push(src.clone(), &SignedImage::new(&v1.manifest, Some(&key))),
    )
    .await
    .expect("push v1");

    route.script_all(&vec![Fault::Status(503); 2000]);
    let cfg = Config {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        },
        timeout: Duration::from_secs(3),
        ..trusting(Config::default(), &key)
    };
    let started = Instant::now();
    let err = bounded(
        "push against a failing server",
        fx.open(&pushed, &cfg, Some(&route))
            .push(src.clone(), &SignedImage::new(&v2.manifest, Some(&key))),
    )
    .await
    .expect_err("push against a server that keeps failing");
    assert!(
        matches!(err, RegistryError::Transport { .. }),
        "{}: expected a Transport error, got {err:?}",
        fx.name()
    );
    eprintln!("{}: push against a failing server: {err}", fx.name());
    let dst = Arc::new(MemoryStore::new());
    let pull_err = bounded(
        "pull against a failing server",
        fx.open(&fx.pull_ref(&pushed, &rep1.resolved), &cfg, Some(&route))
            .pull(dst.clone()),
    )
    .await
    .expect_err("pull against a server that keeps failing");
    assert!(
        matches!(pull_err, RegistryError::Transport { .. }),
        "{}: expected a Transport error, got {pull_err:?}",
        fx.name()
    );
    eprintln!("{}: pull against a failing server: {pull_err}", fx.name());
    assert!(dst.list().expect("list").is_empty(), "nothing was fetched");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{}: giving up took {:?}",
        fx.name(),
        started.elapsed()
    );
    assert!(route.injected() >= 2, "{}: faults were not met", fx.name());

    // The previous version is still there, complete and verified.
    let dst = Arc::new(MemoryStore::new());
    let still = bounded(
        "pull v1",
        fx.open(
            &fx.pull_ref(&pushed, &rep1.resolved),
            &trusting(Config::default(), &key),
            None,
        )
        .pull(dst.clone()),
    )
    .await
    .expect("pull v1 after the failed push");
    assert_pulled(&still, &v1, &key, &src, &dst);
}

// ---------------------------------------------------------------- S3 (moto)

#[cfg(feature = "s3")]
mod s3 {
    use super::*;
    use pf_testsupport::S3Server;

    pub struct S3Fixture {
        pub server: S3Server,
    }

    impl S3Fixture {
        pub fn start() -> S3Fixture {
            S3Fixture {
                server: S3Server::start(),
            }
        }
    }

    impl Fixture for S3Fixture {
        fn name(&self) -> &'static str {
            "s3"
        }
        fn push_ref(&self, label: &str) -> String {
            format!("s3://{}/faults/{label}:v1", self.server.bucket)
        }
        fn route(&self) -> Route {
            let host = self.server.endpoint.trim_start_matches("http://");
            let p = FaultProxy::start(host, vec![]);
            Route {
                endpoint: format!("http://{}", p.addr),
                proxies: vec![p],
                blob_proxy: 0,
                _keep: None,
            }
        }
        fn open(&self, reference: &str, cfg: &Config, route: Option<&Route>) -> Box<dyn Registry> {
            let mut c = cfg.clone();
            c.options.extend(common::config(&self.server).options);
            if let Some(r) = route {
                c.options.insert("s3.endpoint".into(), r.endpoint.clone());
            }
            Box::new(common::engine(&parse(reference), &c))
        }
    }
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_transient_faults_are_retried() {
    transient_faults_are_retried(&s3::S3Fixture::start()).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_flipped_blob_bytes_are_never_accepted() {
    flipped_blob_bytes_are_never_accepted(&s3::S3Fixture::start()).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_permanent_failure_is_typed_and_previous_version_survives() {
    permanent_failure_is_typed_and_previous_version_survives(&s3::S3Fixture::start()).await;
}

// ---------------------------------------------------------------- IPFS (js-ipfs)

#[cfg(feature = "ipfs")]
mod ipfs {
    use super::*;
    use pf_testsupport::IpfsServer;

    pub struct IpfsFixture {
        pub node: IpfsServer,
    }

    impl IpfsFixture {
        pub fn start() -> IpfsFixture {
            IpfsFixture {
                node: IpfsServer::start(),
            }
        }
    }

    impl Fixture for IpfsFixture {
        fn name(&self) -> &'static str {
            "ipfs"
        }
        fn push_ref(&self, _label: &str) -> String {
            "ipfs://".into()
        }
        fn pull_ref(&self, _pushed: &str, resolved: &str) -> String {
            resolved.to_string()
        }
        fn route(&self) -> Route {
            let host = self.node.api.trim_start_matches("http://");
            let p = FaultProxy::start(host, vec![]);
            Route {
                endpoint: format!("http://{}", p.addr),
                proxies: vec![p],
                blob_proxy: 0,
                _keep: None,
            }
        }
        fn open(&self, reference: &str, cfg: &Config, route: Option<&Route>) -> Box<dyn Registry> {
            let mut c = cfg.clone();
            let api = route.map_or(self.node.api.clone(), |r| r.endpoint.clone());
            c.options.insert("ipfs.api".into(), api);
            Box::new(
                pf_registry_cloud::ipfs::open(&parse(reference), &c)
                    .unwrap_or_else(|e| panic!("open {reference}: {e}")),
            )
        }
    }
}

#[cfg(feature = "ipfs")]
#[tokio::test(flavor = "multi_thread")]
async fn ipfs_transient_faults_are_retried() {
    transient_faults_are_retried(&ipfs::IpfsFixture::start()).await;
}

#[cfg(feature = "ipfs")]
#[tokio::test(flavor = "multi_thread")]
async fn ipfs_flipped_blob_bytes_are_never_accepted() {
    flipped_blob_bytes_are_never_accepted(&ipfs::IpfsFixture::start()).await;
}

#[cfg(feature = "ipfs")]
#[tokio::test(flavor = "multi_thread")]
async fn ipfs_permanent_failure_is_typed_and_previous_version_survives() {
    permanent_failure_is_typed_and_previous_version_survives(&ipfs::IpfsFixture::start()).await;
}

// ---------------------------------------------------------------- HF (Hub test server)

#[cfg(feature = "hf")]
mod hf {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};

    use pf_hub_testserver::{HubConfig, HubServer};

    const TOKEN: &str = "hf_faults_token_5e1";

    pub struct HfFixture {
        pub hub: HubServer,
    }

    impl HfFixture {
        pub async fn start() -> HfFixture {
            HfFixture {
                hub: HubServer::start(HubConfig::with_token(TOKEN).page_size(7))
                    .await
                    .expect("start the Hub test server"),
            }
        }
    }

    /// A fault proxy to `upstream` whose address is as long as `like`, so
    /// that rewriting one into the other keeps every Content-Length right.
    fn proxy_as_long_as(upstream: &str, like: &str) -> FaultProxy {
        for _ in 0..50 {
            let p = FaultProxy::start(upstream, vec![]);
            if p.addr.len() == like.len() {
                return p;
            }
        }
        panic!("no proxy port with as many digits as {like}");
    }

    /// A pass-through TCP relay that replaces each `from` with its `to` (same
    /// length) in the server-to-client bytes. Stops accepting when dropped.
    struct Rewriter {
        stop: Arc<AtomicBool>,
    }

    impl Drop for Rewriter {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    impl Rewriter {
        fn start(
            listener: TcpListener,
            upstream: String,
            rules: Vec<(String, String)>,
        ) -> Rewriter {
            let rules: Arc<Vec<(Vec<u8>, Vec<u8>)>> = Arc::new(
                rules
                    .into_iter()
                    .map(|(f, t)| {
                        assert_eq!(f.len(), t.len(), "rewrite {f} -> {t} changes lengths");
                        (f.into_bytes(), t.into_bytes())
                    })
                    .collect(),
            );
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            listener.set_nonblocking(true).expect("nonblocking");
            std::thread::spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (up, rules) = (upstream.clone(), rules.clone());
                            std::thread::spawn(move || relay(client, &up, &rules));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            });
            Rewriter { stop }
        }
    }

    fn rewrite(buf: &mut [u8], rules: &[(Vec<u8>, Vec<u8>)]) {
        let mut i = 0;
        while i < buf.len() {
            match rules.iter().find(|(f, _)| buf[i..].starts_with(f)) {
                Some((f, t)) => {
                    buf[i..i + f.len()].copy_from_slice(t);
                    i += f.len();
                }
                None => i += 1,
            }
        }
    }

    /// Length of the longest tail of `buf` that may be the start of a pattern.
    fn partial_tail(buf: &[u8], rules: &[(Vec<u8>, Vec<u8>)]) -> usize {
        let longest = rules.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        (1..longest.min(buf.len() + 1))
            .rev()
            .find(|&k| {
                rules
                    .iter()
                    .any(|(f, _)| f.starts_with(&buf[buf.len() - k..]))
            })
            .unwrap_or(0)
    }

    fn relay(client: TcpStream, upstream: &str, rules: &[(Vec<u8>, Vec<u8>)]) {
        let _ = client.set_nonblocking(false);
        let Some((mut s_read, mut c_write)) =
            pf_testsupport::faults::forward_requests(client, upstream)
        else {
            return;
        };
        // A short read timeout flushes a held-back partial match when the server pauses.
        let _ = s_read.set_read_timeout(Some(Duration::from_millis(20)));
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    rewrite(&mut pending, rules);
                    let send = pending.len() - partial_tail(&pending, rules);
                    if c_write.write_all(&pending[..send]).is_err() {
                        return;
                    }
                    pending.drain(..send);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !pending.is_empty() {
                        if c_write.write_all(&pending).is_err() {
                            return;
                        }
                        pending.clear();
                    }
                }
                Err(_) => break,
            }
        }
        let _ = c_write.write_all(&pending);
        let _ = c_write.shutdown(Shutdown::Both);
    }

    impl Fixture for HfFixture {
        fn name(&self) -> &'static str {
            "hf"
        }
        fn push_ref(&self, label: &str) -> String {
            format!("hf://pf-tester/faults-{label}")
        }
        /// client -> proxy A -> rewriter -> hub API; client -> proxy B -> LFS
        /// storage. The rewriter points the absolute URLs in the hub's answers
        /// (LFS upload/verify hrefs, download redirects, pagination links) at
        /// A and B.
        fn route(&self) -> Route {
            let hub = self.hub.url().trim_start_matches("http://").to_string();
            let storage = self
                .hub
                .storage_url()
                .trim_start_matches("http://")
                .to_string();
            let storage_proxy = proxy_as_long_as(&storage, &storage);
            let relay = TcpListener::bind("127.0.0.1:0").expect("bind relay");
            let relay_addr = relay.local_addr().expect("relay addr").to_string();
            let hub_proxy = proxy_as_long_as(&relay_addr, &hub);
            let rewriter = Rewriter::start(
                relay,
                hub.clone(),
                vec![
                    (hub, hub_proxy.addr.clone()),
                    (storage, storage_proxy.addr.clone()),
                ],
            );
            Route {
                endpoint: format!("http://{}", hub_proxy.addr),
                proxies: vec![hub_proxy, storage_proxy],
                blob_proxy: 1,
                _keep: Some(Box::new(rewriter)),
            }
        }
        fn open(&self, reference: &str, cfg: &Config, route: Option<&Route>) -> Box<dyn Registry> {
            let mut c = cfg.clone();
            let endpoint = route.map_or(self.hub.url().to_string(), |r| r.endpoint.clone());
            c.options.insert("hf.endpoint".into(), endpoint);
            c.options.insert("hf.token".into(), TOKEN.into());
            Box::new(
                pf_registry_cloud::hf::open(&parse(reference), &c)
                    .unwrap_or_else(|e| panic!("open {reference}: {e}")),
            )
        }
    }

    #[test]
    fn rewriting_keeps_lengths_and_holds_back_partial_matches() {
        let rules = vec![(b"127.0.0.1:40001".to_vec(), b"127.0.0.1:51234".to_vec())];
        let mut b = b"Location: http://127.0.0.1:40001/x 127.0.0.1:4".to_vec();
        rewrite(&mut b, &rules);
        assert_eq!(&b[..], b"Location: http://127.0.0.1:51234/x 127.0.0.1:4");
        assert_eq!(partial_tail(&b, &rules), 11);
        assert_eq!(partial_tail(b"abc", &rules), 0);
    }
}

#[cfg(feature = "hf")]
#[tokio::test(flavor = "multi_thread")]
async fn hf_transient_faults_are_retried() {
    transient_faults_are_retried(&hf::HfFixture::start().await).await;
}

#[cfg(feature = "hf")]
#[tokio::test(flavor = "multi_thread")]
async fn hf_flipped_blob_bytes_are_never_accepted() {
    flipped_blob_bytes_are_never_accepted(&hf::HfFixture::start().await).await;
}

#[cfg(feature = "hf")]
#[tokio::test(flavor = "multi_thread")]
async fn hf_permanent_failure_is_typed_and_previous_version_survives() {
    permanent_failure_is_typed_and_previous_version_survives(&hf::HfFixture::start().await).await;
}
