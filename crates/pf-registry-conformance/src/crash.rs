//! `kill -9` crash consistency of a push, on every backend: push v1, then
//! repeatedly start a push of v2 in a child process and SIGKILL it at a
//! seeded random point. After every kill the reference must pull (trusting
//! the signing key) as exactly v1 or exactly v2, signature verified, every
//! blob equal to the source; it never goes back to v1 once v2 was
//! committed; a push that finished before its kill is visible. Finally an
//! uninterrupted push of the last v2 succeeds and pulls as that v2.
//! Immutable references (IPFS): v1's reference must keep pulling as v1, a
//! completed push's reference as its v2, and the next push must cope with
//! whatever the killed pushes left behind. After each kill the loop first
//! waits for the server to finish the requests the dead client had fully
//! sent (see `settle`): those may still move the reference.
//!
//! The child is the test binary itself, re-executed with
//! `PF_CONFORMANCE_CRASH_JOB` naming a job file (target, reference, source
//! store, manifest, key, the server's configuration); [`crate::harness::run`]
//! sees the variable and pushes instead of running tests.
//!
//! Kill points are spread over the duration of a full push measured on the
//! same server (a calibration push of different content to another
//! reference), so they land in the upload and commit phases alike.
//! `PF_CRASH_ITERATIONS` sets the number of kills per backend (default
//! [`Backend::crash_kills`](crate::Backend::crash_kills), 6 unless the backend says otherwise).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pf_cas::{DirStore, MemoryStore};
use pf_registry_core::{
    Config, Digest, ImageRef, Manifest, Registry, SignedImage, Transport, Verification,
};
use pf_sign::SigningKey;

use crate::harness::Target;
use crate::image::{ImageSpec, TestImage};
use crate::{assert_same_blobs, engine, trusting, Subject};

/// The scenario: (name, needs mutable references).
pub const CASES: &[(&str, bool)] = &[("kill_9_during_push_never_leaves_a_torn_image", false)];

const JOB_VAR: &str = "PF_CONFORMANCE_CRASH_JOB";

/// Runs the scenario `case` of [`CASES`] on `backend`.
pub async fn run(case: &str, backend: &Subject) {
    match case {
        "kill_9_during_push_never_leaves_a_torn_image" => crash_loop(backend).await,
        other => panic!("no crash scenario {other}"),
    }
}

/// Whether this process is a crash-loop child (see the module docs).
pub fn is_child() -> bool {
    std::env::var_os(JOB_VAR).is_some()
}

/// What one child push does.
struct Job {
    target: String,
    reference: String,
    store: PathBuf,
    manifest: PathBuf,
    key: PathBuf,
    config: Config,
}

impl Job {
    fn write(&self, path: &Path) {
        let mut text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.target,
            self.reference,
            self.store.display(),
            self.manifest.display(),
            self.key.display(),
            self.config
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.config.insecure,
        );
        for (k, v) in &self.config.options {
            text.push_str(&format!("{k}={v}\n"));
        }
        fs::write(path, text).expect("write crash job");
    }

    fn read(path: &Path) -> Job {
        let text = fs::read_to_string(path).expect("read crash job");
        let mut lines = text.lines();
        let mut next = || lines.next().expect("crash job line").to_string();
        let (target, reference, store, manifest, key, ca, insecure) =
            (next(), next(), next(), next(), next(), next(), next());
        let mut config = Config {
            ca_file: (!ca.is_empty()).then(|| PathBuf::from(ca)),
            insecure: insecure == "true",
            ..Config::default()
        };
        for line in text.lines().skip(7) {
            let (k, v) = line.split_once('=').expect("option line k=v");
            config.options.insert(k.into(), v.into());
        }
        Job {
            target,
            reference,
            store: store.into(),
            manifest: manifest.into(),
            key: key.into(),
            config,
        }
    }
}

/// The child: pushes the job's image and prints `<digest> <resolved>`;
/// exits 0 on success, 1 on failure.
pub fn child_main(targets: &[Target]) -> ! {
    let path = std::env::var_os(JOB_VAR).expect("crash job variable");
    let job = Job::read(Path::new(&path));
    let target = targets
        .iter()
        .find(|t| t.name == job.target)
        .unwrap_or_else(|| panic!("no target {} in this test binary", job.target));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let r = ImageRef::parse(&job.reference).map_err(|e| e.to_string())?;
        let store = Arc::new(DirStore::open(&job.store).map_err(|e| e.to_string())?);
        let bytes = fs::read(&job.manifest).map_err(|e| e.to_string())?;
        let manifest = Manifest::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let key = SigningKey::load(&job.key).map_err(|e| e.to_string())?;
        let t: Box<dyn Transport> = (target.open)(&r, &job.config).map_err(|e| e.to_string())?;
        let engine = pf_registry_core::Engine::new(t, job.config.clone(), r.digest);
        engine
            .push(store, &SignedImage::new(&manifest, Some(&key)))
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(rep) => {
            println!("{} {}", rep.manifest_digest, rep.resolved);
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("crash child push failed: {e}");
            std::process::exit(1)
        }
    }
}

/// What a push that finished reported.
struct Pushed {
    digest: Digest,
    resolved: String,
}

fn parse_push(stdout: &str) -> Option<Pushed> {
    let (d, resolved) = stdout.trim().split_once(' ')?;
    Some(Pushed {
        digest: Digest::parse(d).ok()?,
        resolved: resolved.to_string(),
    })
}

/// Waits until the server on `ports` has finished every request a killed
/// client had fully sent. A real server completes such a request (a tag
/// PUT, a commit) even though its client is gone, so the reference may
/// still change for a moment after the kill; reading it before then would
/// race that last write. While a handler runs, the server keeps the dead
/// client's connection in CLOSE_WAIT (the client's FIN arrived, the server
/// has not closed yet); the server closes it once the handler returns.
/// Returns how long it waited.
fn settle(ports: &[u16]) -> Duration {
    if ports.is_empty() {
        return Duration::ZERO;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let waiting = close_wait_sockets(ports);
        if waiting == 0 {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the server on ports {ports:?} still holds {waiting} connection(s) of a killed \
             client after 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Server-side TCP sockets on `ports` in CLOSE_WAIT, from /proc/net/tcp{,6}.
fn close_wait_sockets(ports: &[u16]) -> usize {
    const CLOSE_WAIT: &str = "08";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let mut cols = line.split_whitespace().skip(1);
                    let local = cols.next().unwrap_or("");
                    let state = cols.nth(1).unwrap_or("");
                    let port = local
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    state == CLOSE_WAIT && port.is_some_and(|p| ports.contains(&p))
                })
                .count()
        })
        .sum()
}

/// An image of `files` incompressible blobs of `size` bytes from `seed`.
fn image(seed: u64, files: usize, size: usize, store: &DirStore, name: &str) -> TestImage {
    let mut spec = ImageSpec::sample(seed, 2);
    spec.layers = (0..files)
        .map(|i| {
            let mut v = Vec::with_capacity(size);
            pf_testsupport::memory::Noise::new((seed * 1000 + i as u64) | 1, size as u64)
                .read_to_end(&mut v)
                .expect("generating test bytes");
            v
        })
        .collect();
    spec.build(store, name)
}

/// One crash loop's files and images.
struct Work<'a> {
    fx: &'a Subject,
    tmp: tempfile::TempDir,
    src: Arc<DirStore>,
    key: SigningKey,
}

impl Work<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Starts a child pushing `img` to `reference`, stdout to `out`.
    fn spawn(&self, img: &TestImage, reference: &ImageRef, label: &str) -> std::process::Child {
        let manifest = self.path(&format!("{label}.manifest"));
        fs::write(&manifest, img.manifest.to_bytes()).expect("write manifest");
        let job = self.path(&format!("{label}.job"));
        Job {
            target: self.fx.target().to_string(),
            reference: reference.to_string(),
            store: self.path("src"),
            manifest,
            key: self.path("k.key"),
            config: self.fx.config(),
        }
        .write(&job);
        let exe = std::env::current_exe().expect("current test binary");
        Command::new(exe)
            .env(JOB_VAR, &job)
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.path(&format!("{label}.out"))).expect("stdout file"))
            .stderr(fs::File::create(self.path(&format!("{label}.err"))).expect("stderr file"))
            .spawn()
            .expect("spawn the crash child")
    }

    fn report(&self, label: &str) -> Option<Pushed> {
        parse_push(&fs::read_to_string(self.path(&format!("{label}.out"))).ok()?)
    }

    /// A push of `img` to `reference` in-process, which must succeed.
    async fn push(&self, img: &TestImage, reference: &ImageRef) -> Pushed {
        let rep = engine(self.fx, reference, &self.fx.config())
            .push(
                self.src.clone(),
                &SignedImage::new(&img.manifest, Some(&self.key)),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: push to {reference}: {e}", self.fx.name()));
        Pushed {
            digest: rep.manifest_digest,
            resolved: rep.resolved,
        }
    }

    /// Pulls `reference` trusting the key into a fresh store: must succeed,
    /// verified. Returns the manifest digest and the store.
    async fn pull(&self, reference: &ImageRef, label: &str) -> (Digest, Arc<MemoryStore>) {
        let dst = Arc::new(MemoryStore::new());
        let rep = engine(self.fx, reference, &trusting(&self.fx.config(), &self.key))
            .pull(dst.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {label}: {reference} does not pull: {e}",
                    self.fx.name()
                )
            });
        assert!(
            matches!(&rep.verification, Verification::Verified { .. }),
            "{}: {label}: signature not verified: {:?}",
            self.fx.name(),
            rep.verification
        );
        (rep.manifest_digest, dst)
    }

    /// `dst` holds `img`'s closure, byte for byte.
    fn holds(&self, img: &TestImage, dst: &MemoryStore) {
        assert_same_blobs(&*self.src, dst, &img.closure);
    }
}

fn parse(r: &str) -> ImageRef {
    ImageRef::parse(r).unwrap_or_else(|e| panic!("reference {r}: {e}"))
}

fn iterations(default: u64) -> u64 {
    std::env::var("PF_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The shared crash loop (see the module docs).
async fn crash_loop(fx: &Subject) {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = Arc::new(DirStore::open(tmp.path().join("src")).expect("source store"));
    let key = SigningKey::generate().expect("keygen");
    key.save(&tmp.path().join("k.key")).expect("save key");
    let w = Work { fx, tmp, src, key };
    let name = fx.name();
    let immutable = !fx.mutable_refs();
    let ports = fx.backend().ports();
    let push_ref = fx.fresh_ref("crash");
    let v1_img = image(1, 3, 10_000, &w.src, "v1");
    // Every iteration pushes a new v2 (so every push has blobs to upload);
    // big enough that a push takes a while. Calibration has the same shape.
    let n = iterations(fx.backend().crash_kills());
    let v2: Vec<TestImage> = (0..n)
        .map(|i| image(100 + i, 12, 256 << 10, &w.src, &format!("v2-{i}")))
        .collect();
    let v2_digests: Vec<Digest> = v2
        .iter()
        .map(|img| SignedImage::new(&img.manifest, Some(&w.key)).digest())
        .collect();
    let cal = image(3, 12, 256 << 10, &w.src, "cal");

    let mut v1 = w.push(&v1_img, &push_ref).await;
    let v1_ref = if immutable {
        parse(&v1.resolved)
    } else {
        push_ref.clone()
    };
    let (d, dst) = w.pull(&v1_ref, "v1").await;
    assert_eq!(d, v1.digest, "{name}: v1 pulls as another manifest");
    w.holds(&v1_img, &dst);

    let t = Instant::now();
    let status = w
        .spawn(&cal, &fx.fresh_ref("calibration"), "cal")
        .wait()
        .expect("wait for the calibration push");
    assert!(
        status.success(),
        "{name}: the calibration push failed: {}",
        fs::read_to_string(w.path("cal.err")).unwrap_or_default()
    );
    let full_push = t.elapsed();
    // Kill points fall in [0, 1.3 x a full push); a push that finishes before
    // its kill point resets the window to its own duration (machine load).
    let window = |push: Duration| (push.as_millis() as u64 * 13 / 10).max(50);
    let mut window_ms = window(full_push);
    let first_window_ms = window_ms;

    let mut seed = 0x9e37_79b9_7f4a_7c15u64
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let (mut at_v1, mut at_v2, mut completed) = (0u32, 0u32, 0u32);
    let (mut settled, mut longest_settle) = (0u32, Duration::ZERO);
    for (i, v2_img) in v2.iter().enumerate() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % window_ms);
        let label = format!("crash-{i}");
        let mut child = w.spawn(v2_img, &push_ref, &label);
        let spawned = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("poll the child") {
                window_ms = window(spawned.elapsed());
                break st;
            }
            if spawned.elapsed() >= delay {
                let _ = child.kill(); // SIGKILL
                break child.wait().expect("wait for the child");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let finished =
            if status.success() {
                Some(w.report(&label).unwrap_or_else(|| {
                    panic!("{name}: iteration {i}: push exited 0 without a report")
                }))
            } else {
                None
            };
        completed += u32::from(finished.is_some());
        if finished.is_none() {
            let waited = settle(&ports);
            settled += u32::from(!waited.is_zero());
            longest_settle = longest_settle.max(waited);
        }
        let ctx = format!(
            "{name}: iteration {i} (kill after {delay:?}, push finished first: {})",
            finished.is_some()
        );

        if immutable {
            let (d, dst) = w.pull(&v1_ref, &label).await;
            assert_eq!(d, v1.digest, "{ctx}: v1's reference changed");
            w.holds(&v1_img, &dst);
            match &finished {
                Some(p) => {
                    let (d, dst) = w.pull(&parse(&p.resolved), &format!("{label}-new")).await;
                    assert_eq!(d, p.digest, "{ctx}: the pushed root pulls another manifest");
                    assert_eq!(d, v2_digests[i], "{ctx}: the pushed root is not v2");
                    w.holds(v2_img, &dst);
                    at_v2 += 1;
                }
                None => at_v1 += 1,
            }
            continue;
        }
        let (d, dst) = w.pull(&push_ref, &label).await;
        if d == v1.digest {
            assert!(
                finished.is_none(),
                "{ctx}: the push finished but the reference still shows v1"
            );
            w.holds(&v1_img, &dst);
            at_v1 += 1;
        } else {
            if d != v2_digests[i] {
                let earlier = v2_digests[..i].iter().position(|e| *e == d);
                panic!(
                    "{ctx}: the reference shows {d}, neither v1 nor this iteration's v2 \
                     (it is v2 of iteration {earlier:?})"
                );
            }
            w.holds(v2_img, &dst);
            if let Some(p) = &finished {
                assert_eq!(d, p.digest, "{ctx}: the reference shows another push");
            }
            at_v2 += 1;
            // Back to v1, so the next kill again interrupts a v1 -> v2 change.
            v1 = w.push(&v1_img, &push_ref).await;
        }
    }

    // An uninterrupted push of the last v2 (whose blobs a killed push may
    // have left half-uploaded) now succeeds and pulls as that v2.
    let last = v2.last().expect("at least one iteration");
    let p = w.push(last, &push_ref).await;
    let final_ref = if immutable {
        parse(&p.resolved)
    } else {
        push_ref.clone()
    };
    let (d, dst) = w.pull(&final_ref, "final").await;
    assert_eq!(d, p.digest, "{name}: the final push is not what pulls");
    w.holds(last, &dst);
    eprintln!(
        "{name}: {n} kills, first within {first_window_ms} ms (full push {full_push:?}), \
         last within {window_ms} ms: {at_v1} left v1, {at_v2} showed v2, \
         {completed} pushes finished first; after {settled} kills the server was still \
         finishing requests (up to {longest_settle:?}); {:?} in all",
        started.elapsed()
    );
}
