//! Fault injection between the client and a REAL server, the same
//! scenarios for every backend a [`FaultProxy`] can stand in front of:
//!
//! * transient faults (500/502/503, 429 + `Retry-After`, connections cut
//!   mid-body, a stalled connection) are retried: push and pull succeed and
//!   the pulled blobs equal the source;
//! * flipped bytes in a downloaded blob, or anywhere in any response, are
//!   never accepted: the pull fails with an integrity (or signature) error
//!   and no corrupt blob lands in the store;
//! * a server that keeps failing gives a typed error quickly (no panic, no
//!   hang) and the previously pushed version stays pullable and verified.
//!
//! A backend provides the proxies ([`Backend::route`](crate::Backend::route):
//! one in front of each origin its traffic crosses) and points a reference
//! and configuration at them ([`Backend::through`](crate::Backend::through)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_core::{
    Config, Engine, ImageRef, PullReport, Registry, RegistryError, RetryPolicy, SignedImage,
    Transport, Verification,
};
use pf_sign::{SigningKey, TrustPolicy};
use pf_testsupport::{Fault, FaultProxy};
use rand::{RngExt, SeedableRng};

use crate::image::{ImageSpec, TestImage};
use crate::{engine, pull_ref, Subject};

/// The scenarios: (name, needs mutable references).
pub const CASES: &[(&str, bool)] = &[
    ("transient_faults_are_retried", false),
    ("stalled_connections_time_out_and_are_retried", false),
    ("flipped_blob_bytes_are_never_accepted", false),
    ("flipped_bytes_in_any_response_are_never_accepted", false),
    (
        "permanent_failure_is_typed_and_previous_version_survives",
        false,
    ),
    ("failing_server_errors_report_their_attempts", false),
];

/// Runs the scenario `case` of [`CASES`] on `backend`.
pub async fn run(case: &str, backend: &Subject) {
    match case {
        "transient_faults_are_retried" => transient_faults_are_retried(backend).await,
        "stalled_connections_time_out_and_are_retried" => {
            stalled_connections_time_out_and_are_retried(backend).await
        }
        "flipped_blob_bytes_are_never_accepted" => {
            flipped_blob_bytes_are_never_accepted(backend).await
        }
        "flipped_bytes_in_any_response_are_never_accepted" => {
            flipped_bytes_in_any_response_are_never_accepted(backend).await
        }
        "permanent_failure_is_typed_and_previous_version_survives" => {
            permanent_failure_is_typed_and_previous_version_survives(backend).await
        }
        "failing_server_errors_report_their_attempts" => {
            failing_server_errors_report_their_attempts(backend).await
        }
        other => panic!("no fault scenario {other}"),
    }
}

/// Fault proxies in front of one server for one scenario.
pub struct Route {
    /// Every proxy the traffic crosses.
    pub proxies: Vec<FaultProxy>,
    /// Index of the proxy carrying blob downloads.
    pub blob_proxy: usize,
    /// What [`Backend::through`](crate::Backend::through) points the client
    /// at (for one proxy: its `127.0.0.1:<port>`).
    pub endpoint: String,
    /// Keeps helpers (e.g. a rewriting relay) alive as long as the route.
    pub keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Route {
    /// One proxy in front of `upstream` (`host:port`); the endpoint is the
    /// proxy's `127.0.0.1:<port>`.
    pub fn proxy(upstream: &str) -> Route {
        let p = FaultProxy::start(upstream, vec![]);
        Route {
            endpoint: p.addr.clone(),
            proxies: vec![p],
            blob_proxy: 0,
            keep: None,
        }
    }
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

fn route(fx: &Subject) -> Route {
    fx.backend()
        .route()
        .unwrap_or_else(|| panic!("{}: the backend offers no fault route", fx.name()))
}

/// The engine for `reference` on `fx`, through `route` or directly.
fn open(
    fx: &Subject,
    reference: &ImageRef,
    cfg: &Config,
    route: Option<&Route>,
) -> Engine<Box<dyn Transport>> {
    match route {
        None => engine(fx, reference, cfg),
        Some(route) => {
            let mut c = cfg.clone();
            let r = fx.backend().through(reference, &mut c, &route.endpoint);
            engine(fx, &r, &c)
        }
    }
}

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

fn trust(mut cfg: Config, key: &SigningKey) -> Config {
    cfg.trust = TrustPolicy::new(vec![key.public_key()]);
    cfg
}

fn key() -> SigningKey {
    SigningKey::generate().expect("generate a signing key")
}

/// Every blob in `store` checks against the digest it is stored under:
/// its SHA-256, or for a pack named by its chunks (per an fs tree in the
/// store) its chunks' digests.
fn all_blobs_verify(store: &MemoryStore) {
    let blobs = store.list().expect("list");
    let mut tilings = pf_registry_core::pack::Tilings::new();
    for d in &blobs {
        if let Ok(tree) = pf_registry_core::FsTree::from_bytes(&store.get(d).expect("get")) {
            tilings.extend(pf_registry_core::pack::chunk_named(&tree));
        }
    }
    for d in blobs {
        let mut check = pf_registry_core::pack::PackCheck::new(tilings.get(&d).map(Vec::as_slice));
        check.update(&store.get(&d).expect("get"));
        assert_eq!(
            check.finish(),
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
async fn transient_faults_are_retried(fx: &Subject) {
    let route = route(fx);
    let script = transient_script();
    let src = Arc::new(MemoryStore::new());
    let img = image(81, &src, "transient");
    let key = key();
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let cfg = trust(fast_retries(), &key);
    let pushed = fx.fresh_ref("transient");

    route.script_all(&script);
    let rep = bounded(
        "push through faults",
        open(fx, &pushed, &cfg, Some(&route)).push(src.clone(), &signed),
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
        open(
            fx,
            &pull_ref(fx, &pushed, &rep.resolved),
            &cfg,
            Some(&route),
        )
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
async fn flipped_blob_bytes_are_never_accepted(fx: &Subject) {
    let route = route(fx);
    let src = Arc::new(MemoryStore::new());
    let img = image(82, &src, "flip");
    let key = key();
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let pushed = fx.fresh_ref("flip");
    let rep = bounded(
        "clean push",
        open(fx, &pushed, &Config::default(), None).push(src.clone(), &signed),
    )
    .await
    .expect("clean push");
    let pulled_ref = pull_ref(fx, &pushed, &rep.resolved);

    route.proxies[route.blob_proxy].push(vec![Fault::FlipAt(FLIP_AT); 64]);
    // One blob at a time, so the flip lands in the first (large) layer.
    let cfg = Config {
        concurrency: 1,
        ..trust(fast_retries(), &key)
    };
    let dst = Arc::new(MemoryStore::new());
    let first_layer = img.manifest.layers[0].digest;
    let outcome = bounded(
        "pull with flipped bytes",
        open(fx, &pulled_ref, &cfg, Some(&route)).pull(dst.clone()),
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
        open(fx, &pulled_ref, &trust(Config::default(), &key), None).pull(dst.clone()),
    )
    .await
    .expect("clean pull after the corrupted one");
    assert_pulled(&ok, &img, &key, &src, &dst);
}

/// (c) a server that keeps failing: a typed error, soon; v1 survives.
async fn permanent_failure_is_typed_and_previous_version_survives(fx: &Subject) {
    let route = route(fx);
    let src = Arc::new(MemoryStore::new());
    let v1 = image(83, &src, "v1");
    let v2 = image(84, &src, "v2");
    let key = key();
    let pushed = fx.fresh_ref("keep");
    let rep1 = bounded(
        "push v1",
        open(fx, &pushed, &Config::default(), None)
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
        ..trust(Config::default(), &key)
    };
    let started = Instant::now();
    let err = bounded(
        "push against a failing server",
        open(fx, &pushed, &cfg, Some(&route))
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
        open(
            fx,
            &pull_ref(fx, &pushed, &rep1.resolved),
            &cfg,
            Some(&route),
        )
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
        open(
            fx,
            &pull_ref(fx, &pushed, &rep1.resolved),
            &trust(Config::default(), &key),
            None,
        )
        .pull(dst.clone()),
    )
    .await
    .expect("pull v1 after the failed push");
    assert_pulled(&still, &v1, &key, &src, &dst);
}

/// A connection that says nothing for longer than the client's timeout is
/// given up and retried, for the push and again for the pull.
async fn stalled_connections_time_out_and_are_retried(fx: &Subject) {
    let route = route(fx);
    let script = [Fault::Stall(Duration::from_secs(4)), Fault::Status(503)];
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(61, 4).build(&*src, "stall");
    let key = key();
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let cfg = Config {
        timeout: Duration::from_secs(2),
        ..trust(fast_retries(), &key)
    };
    let pushed = fx.fresh_ref("stall");
    route.script_all(&script);
    let rep = bounded(
        "push through stalls",
        open(fx, &pushed, &cfg, Some(&route)).push(src.clone(), &signed),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{}: push through stalled connections failed: {e}",
            fx.name()
        )
    });
    assert_eq!(rep.manifest_digest, signed.digest());
    route.script_all(&script);
    let dst = Arc::new(MemoryStore::new());
    let pulled = bounded(
        "pull through stalls",
        open(
            fx,
            &pull_ref(fx, &pushed, &rep.resolved),
            &cfg,
            Some(&route),
        )
        .pull(dst.clone()),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{}: pull through stalled connections failed: {e}",
            fx.name()
        )
    });
    assert_pulled(&pulled, &img, &key, &src, &dst);
    assert_eq!(route.pending(), 0, "{}: a stall was never met", fx.name());
    assert_eq!(route.injected(), 2 * script.len() * route.proxies.len());
}

/// One byte flipped early in the body of the first response of EVERY
/// connection (the manifest, the signature, listings, blobs), no retries: the pull fails
/// with an integrity, invalid-data or signature error and stores nothing
/// corrupt; the image stays readable directly.
async fn flipped_bytes_in_any_response_are_never_accepted(fx: &Subject) {
    let route = route(fx);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(62, 4).build(&*src, "flip-any");
    let signed = SignedImage::new(&img.manifest, None);
    let pushed = fx.fresh_ref("flip-any");
    let rep = bounded(
        "clean push",
        open(fx, &pushed, &Config::default(), None).push(src.clone(), &signed),
    )
    .await
    .expect("clean push");
    let pulled_ref = pull_ref(fx, &pushed, &rep.resolved);
    route.script_all(&vec![Fault::FlipBodyAt(400); 200]);
    let cfg = Config {
        retry: RetryPolicy::none(),
        ..Config::default()
    };
    let dst = Arc::new(MemoryStore::new());
    match bounded(
        "pull with flipped bytes",
        open(fx, &pulled_ref, &cfg, Some(&route)).pull(dst.clone()),
    )
    .await
    {
        Err(RegistryError::Integrity { .. })
        | Err(RegistryError::InvalidData { .. })
        | Err(RegistryError::Signature(_)) => {}
        Err(e) => panic!(
            "{}: corruption must be an integrity/invalid-data/signature error, got {e:?}",
            fx.name()
        ),
        Ok(_) => panic!("{}: a pull with flipped bytes succeeded", fx.name()),
    }
    all_blobs_verify(&dst);
    assert!(route.injected() > 0, "{}: no flip was injected", fx.name());
    let ok = bounded(
        "clean pull",
        open(fx, &pulled_ref, &Config::default(), None).pull(Arc::new(MemoryStore::new())),
    )
    .await
    .expect("clean pull");
    assert_eq!(ok.manifest, img.manifest);
}

/// A push against a server that keeps answering 503 gives up with a
/// Transport error that says it retried (`attempts > 1`).
async fn failing_server_errors_report_their_attempts(fx: &Subject) {
    let route = route(fx);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(64, 3).build(&*src, "attempts");
    route.script_all(&vec![Fault::Status(503); 500]);
    let err = bounded(
        "push against a failing server",
        open(fx, &fx.fresh_ref("attempts"), &fast_retries(), Some(&route))
            .push(src.clone(), &SignedImage::new(&img.manifest, None)),
    )
    .await
    .expect_err("push against a server that keeps failing");
    match err {
        RegistryError::Transport { attempts, .. } => assert!(
            attempts > 1,
            "{}: gave up after {attempts} attempt(s): {err}",
            fx.name()
        ),
        other => panic!(
            "{}: expected Transport after retries, got {other}",
            fx.name()
        ),
    }
}
