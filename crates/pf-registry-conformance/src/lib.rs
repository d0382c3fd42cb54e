//! The shared suites every backend runs against a real server: the
//! conformance properties ([`conformance`]), the fault scenarios behind a
//! fault-injecting proxy ([`faults`]), the large-blob memory scenario
//! ([`large`]), the `kill -9` crash loop ([`crash`]) and the lifecycle
//! cases ([`lifecycle`]: tags, log, rm, retain, gc, verify); ranged reads
//! of stored blobs ([`ranged`]) run with the conformance properties.
//!
//! A backend's test file is a `harness = false` test whose `main` returns
//! [`harness::run`] with the suites to run and one [`Target`] per server
//! flavour: how to start the server ([`Backend`]) and how to open a
//! transport ([`Opener`]). Every case is its own named test
//! (`<target>::<suite>::<case>`), so a failure names the promise and the
//! backend; one server per target is started lazily and shared by the
//! binary's cases.
//!
//! ```text
//! // crates/pf-registry-file/tests/conformance.rs (harness = false)
//! fn main() -> ExitCode {
//!     harness::run(&[Suite::Conformance, Suite::Faults, Suite::Crash], vec![common::target()])
//! }
//! ```
//!
//! The images the cases push are built into any blob store:
//!
//! ```
//! use pf_cas::{BlobStore, MemoryStore};
//! use pf_registry_conformance::ImageSpec;
//!
//! let store = MemoryStore::new();
//! let img = ImageSpec::sample(1, 3).build(&store, "example");
//! assert!(img.closure.iter().all(|d| store.has(d).unwrap()));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conformance;
pub mod crash;
pub mod encrypted;
pub mod faults;
pub mod harness;
pub mod image;
pub mod large;
pub mod lifecycle;
pub mod ranged;

use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_registry_core::{Config, Engine, ImageRef, Transport};
use pf_sign::{SigningKey, TrustPolicy};

pub use faults::Route;
pub use harness::{Suite, Target};
pub use image::{ImageSpec, TestImage};
pub use large::LargeBlobs;

/// Opens a transport for a reference with a configuration: the backend
/// crate's constructor (e.g. `OciTransport::new`), boxed.
pub type Opener = fn(&ImageRef, &Config) -> pf_registry_core::Result<Box<dyn Transport>>;

/// A running server a backend is tested against.
pub trait Backend: Send + Sync {
    /// Short name for messages.
    fn name(&self) -> String;
    /// A reference no other test uses; `label` helps debugging.
    fn fresh_ref(&self, label: &str) -> ImageRef;
    /// What reaches the server: endpoint options, `ca_file`, credentials.
    /// Merged into every configuration a case uses (the case's own options
    /// win), and handed to crash-loop child processes.
    fn config(&self) -> Config {
        Config::default()
    }
    /// Number of generated images the round-trip property pushes
    /// (`PF_CONFORMANCE_CASES` overrides it).
    fn generated_cases(&self) -> u32 {
        4
    }
    /// Fresh fault proxies in front of the server (see [`faults`]); `None`
    /// when nothing can stand between client and storage.
    fn route(&self) -> Option<Route> {
        None
    }
    /// The configuration option holding the server's base URL (e.g.
    /// `s3.endpoint`), if the backend has one; see [`through`](Self::through).
    fn endpoint_option(&self) -> Option<&'static str> {
        None
    }
    /// Points `reference` and `config` at `endpoint` (a [`Route`]'s) instead
    /// of the server; returns the reference to use. By default: sets the
    /// [`endpoint_option`](Self::endpoint_option) to `http://<endpoint>`.
    fn through(&self, reference: &ImageRef, config: &mut Config, endpoint: &str) -> ImageRef {
        if let Some(key) = self.endpoint_option() {
            config
                .options
                .insert(key.into(), format!("http://{endpoint}"));
        }
        reference.clone()
    }
    /// Loopback ports the server listens on (the crash loop waits until the
    /// server has finished a killed client's requests on them).
    fn ports(&self) -> Vec<u16> {
        Vec::new()
    }
    /// Kills in the crash loop (`PF_CRASH_ITERATIONS` overrides it).
    fn crash_kills(&self) -> u64 {
        6
    }
    /// Size of the large-blob scenario.
    fn large_blobs(&self) -> LargeBlobs {
        LargeBlobs::default()
    }
    /// Backend-specific checks after the large-blob push (e.g. that it was
    /// chunked), given the blob count and size.
    fn check_large_push(&self, count: u64, size: u64) {
        let _ = (count, size);
    }
}

/// A started backend with its transport constructor: what every case runs on.
pub struct Subject {
    backend: Box<dyn Backend>,
    open: Opener,
    mutable: bool,
    target: String,
}

impl Subject {
    /// `backend` opened with `open`; `mutable` says whether pushing to a
    /// reference again replaces the image (false for IPFS).
    pub fn new(target: &str, backend: Box<dyn Backend>, open: Opener, mutable: bool) -> Subject {
        Subject {
            backend,
            open,
            mutable,
            target: target.to_string(),
        }
    }
    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }
    /// The target's name (e.g. `oci_token`).
    pub fn target(&self) -> &str {
        &self.target
    }
    /// Short name for messages.
    pub fn name(&self) -> String {
        self.backend.name()
    }
    /// See [`Backend::fresh_ref`].
    pub fn fresh_ref(&self, label: &str) -> ImageRef {
        self.backend.fresh_ref(label)
    }
    /// See [`Backend::config`].
    pub fn config(&self) -> Config {
        self.backend.config()
    }
    /// See [`Backend::generated_cases`].
    pub fn generated_cases(&self) -> u32 {
        self.backend.generated_cases()
    }
    /// Whether pushing to the same reference again replaces the image.
    pub fn mutable_refs(&self) -> bool {
        self.mutable
    }
    /// A transport for `reference` with `config` plus the server's settings.
    pub fn transport(
        &self,
        reference: &ImageRef,
        config: &Config,
    ) -> pf_registry_core::Result<Box<dyn Transport>> {
        (self.open)(reference, &with_server(config, &self.backend.config()))
    }
}

/// `config` with what `server` sets and `config` does not (options,
/// `ca_file`, `insecure`).
pub fn with_server(config: &Config, server: &Config) -> Config {
    let mut c = config.clone();
    for (k, v) in &server.options {
        c.options.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if c.ca_file.is_none() {
        c.ca_file.clone_from(&server.ca_file);
    }
    c.insecure |= server.insecure;
    c
}

/// Opens the engine for `r` on `backend` with `config`.
pub fn engine(backend: &Subject, r: &ImageRef, config: &Config) -> Engine<Box<dyn Transport>> {
    let t = backend
        .transport(r, config)
        .unwrap_or_else(|e| panic!("{}: cannot open transport for {r}: {e}", backend.name()));
    Engine::new(t, config.clone(), r.digest)
}

/// `base` trusting only `key`.
pub fn trusting(base: &Config, key: &SigningKey) -> Config {
    let mut c = base.clone();
    c.trust = TrustPolicy::new(vec![key.public_key()]);
    c
}

/// The reference to pull from after a push (the resolved one for immutable backends).
pub fn pull_ref(backend: &Subject, pushed: &ImageRef, resolved: &str) -> ImageRef {
    if backend.mutable_refs() {
        pushed.clone()
    } else {
        ImageRef::parse(resolved)
            .unwrap_or_else(|e| panic!("resolved ref {resolved:?} does not parse: {e}"))
    }
}

/// Every blob of `digests` in `dst` equals the one in `src`.
pub fn assert_same_blobs(src: &dyn BlobStore, dst: &dyn BlobStore, digests: &[Digest]) {
    for d in digests {
        let a = src.get(d).expect("source blob");
        let b = dst
            .get(d)
            .unwrap_or_else(|e| panic!("pulled store lacks {d}: {e}"));
        assert!(a == b, "blob {d} differs after round trip");
    }
}

/// `PF_CONFORMANCE_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PF_CONFORMANCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
