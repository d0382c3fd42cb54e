//! `kill -9` crash consistency of `pf push` against the remote backends on
//! real loopback servers (OCI registry, S3 on moto, the Hub test server,
//! js-ipfs): push v1, then repeatedly start a push of v2 and SIGKILL it at a
//! seeded random point. After every kill the reference must pull (with
//! `pf pull --trust`) as exactly v1 or exactly v2, signature verified; it
//! never goes back to v1 once v2 was committed; a push that finished before
//! its kill is visible. Finally an uninterrupted push of v2 succeeds and pulls
//! as v2. IPFS references are immutable: there v1's CID must keep pulling as
//! v1, a completed push's CID as v2, and the next push must cope with
//! whatever the killed pushes left in the node's dedup index. After each
//! kill the loop first waits for the server to finish the requests the dead
//! client had fully sent (see `settle`): those may still move the reference.
//!
//! Kill points are spread over the duration of a full push measured on the
//! same server (a calibration push of different content to another
//! reference), so they land in the snapshot, upload and commit phases alike.
//! `PF_CRASH_ITERATIONS` raises the number of kills per backend (default 6).
#![cfg(any(feature = "oci", feature = "s3", feature = "hf", feature = "ipfs"))]

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::text;

/// How `pf` reaches one backend.
struct Remote {
    name: &'static str,
    /// Environment of every `pf` run (endpoint, credentials); the rest of
    /// the environment is cleared.
    env: Vec<(&'static str, String)>,
    /// Where v1 and v2 are pushed.
    push_ref: String,
    /// Where the calibration push goes (must not share blobs with `push_ref`).
    calibration_ref: String,
    /// Pushes create new immutable references (IPFS): check the pushed
    /// references instead of one mutable one.
    immutable: bool,
    /// Loopback ports of the server(s) `pf` talks to (see [`settle`]).
    ports: Vec<u16>,
}

/// The port of `http://127.0.0.1:<port>[/...]` or `127.0.0.1:<port>`.
fn port_of(addr: &str) -> u16 {
    let host_port = addr.split("://").last().unwrap_or(addr);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    host_port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// Waits until the server on `ports` has finished every request a killed
/// `pf` had fully sent. A real server completes such a request (a tag PUT,
/// a commit) even though its client is gone, so the reference may still
/// change for a moment after the kill; reading it before then would race
/// that last write. While a handler runs, the server keeps the dead
/// client's connection in CLOSE_WAIT (the client's FIN arrived, the server
/// has not closed yet); the server closes it once the handler returns.
/// Returns how long it waited.
fn settle(ports: &[u16]) -> Duration {
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

/// What a successful `pf --json push` printed.
struct Pushed {
    digest: String,
    resolved: String,
}

struct Work<'a> {
    remote: &'a Remote,
    tmp: tempfile::TempDir,
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    pf_testsupport::memory::Noise::new(seed | 1, len as u64)
        .read_to_end(&mut v)
        .expect("generating test bytes");
    v
}

fn write_tree(dir: &Path, seed: u64, files: usize, size: usize) {
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    for i in 0..files {
        fs::write(
            dir.join(format!("f{i:02}.bin")),
            noise(seed * 1000 + i as u64, size),
        )
        .expect("write");
    }
    fs::write(dir.join("sub/version.txt"), format!("tree {seed}\n")).expect("write");
}

/// Relative paths and contents of every file under `dir`, sorted.
fn tree_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.push((rel, fs::read(&p).expect("read file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn same_tree(a: &Path, b: &Path) -> bool {
    tree_files(a) == tree_files(b)
}

impl Work<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, store: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pf"));
        c.args(args)
            .env_clear()
            .env("PF_STORE", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .envs(self.remote.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn pf(&self, store: &str, args: &[&str]) -> Output {
        self.cmd(store, args).output().expect("run pf")
    }

    fn key(&self) -> String {
        self.path("k.key").display().to_string()
    }

    /// `pf --json push <dir> <reference> --key k.key`, which must succeed.
    fn push(&self, dir: &str, reference: &str, store: &str) -> Pushed {
        let src = self.path(dir).display().to_string();
        let out = self.pf(
            store,
            &["--json", "push", &src, reference, "--key", &self.key()],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: push {dir} to {reference}: {}",
            self.remote.name,
            text(&out)
        );
        parse_push(&out.stdout).unwrap_or_else(|| {
            panic!(
                "{}: push printed no report: {}",
                self.remote.name,
                text(&out)
            )
        })
    }

    /// `pf --json pull <reference> --into <fresh dir> --trust k.pub` into a
    /// fresh store; must succeed with a verified signature. Returns the
    /// manifest digest and the restored directory.
    fn pull(&self, reference: &str, label: &str) -> (String, PathBuf) {
        let into = self.path(&format!("restored-{label}"));
        let out = self.pf(
            &format!("store-pull-{label}"),
            &[
                "--json",
                "pull",
                reference,
                "--into",
                &into.display().to_string(),
                "--trust",
                &self.path("k.pub").display().to_string(),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {label}: {reference} does not pull: {}",
            self.remote.name,
            text(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{label}: pull JSON: {e}: {}", text(&out)));
        assert_eq!(
            v["verification"]["status"], "verified",
            "{}: {label}: signature not verified: {v}",
            self.remote.name
        );
        let digest = v["manifest_digest"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no manifest_digest in {v}"))
            .to_string();
        (digest, into)
    }
}

fn parse_push(stdout: &[u8]) -> Option<Pushed> {
    let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    Some(Pushed {
        digest: v["manifest_digest"].as_str()?.to_string(),
        resolved: v["resolved"].as_str()?.to_string(),
    })
}

fn iterations() -> u64 {
    std::env::var("PF_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// The shared crash loop (see the module docs).
fn crash_loop(remote: &Remote) {
    let started = Instant::now();
    let w = Work {
        remote,
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    let name = remote.name;
    fs::create_dir_all(w.path("docker")).expect("mkdir");
    let out = w.pf(
        "store-keygen",
        &["keygen", "--out", &w.path("k").display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "keygen: {}", text(&out));
    write_tree(&w.path("v1"), 1, 3, 10_000);
    // Every iteration pushes a new v2 (so every push has blobs to upload);
    // big enough that a push takes a while. Calibration has the same shape.
    let v2 = |i: u64| {
        let dir = format!("v2-{i}");
        if !w.path(&dir).exists() {
            write_tree(&w.path(&dir), 100 + i, 12, 256 << 10);
        }
        dir
    };
    write_tree(&w.path("cal"), 3, 12, 256 << 10);

    let mut v1 = w.push("v1", &remote.push_ref, "store-v1");
    let v1_ref = if remote.immutable {
        v1.resolved.clone()
    } else {
        remote.push_ref.clone()
    };
    let (d, dir) = w.pull(&v1_ref, "v1");
    assert_eq!(d, v1.digest, "{name}: v1 pulls as another manifest");
    assert!(same_tree(&w.path("v1"), &dir), "{name}: v1 restores wrong");

    let t = Instant::now();
    w.push("cal", &remote.calibration_ref, "store-cal");
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
    let n = iterations();
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % window_ms);
        let v2_dir = v2(i);
        let stdout_path = w.path(&format!("push-{i}.out"));
        let src = w.path(&v2_dir).display().to_string();
        let mut child = w
            .cmd(
                &format!("store-crash-{i}"),
                &["--json", "push", &src, &remote.push_ref, "--key", &w.key()],
            )
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pf push");
        let spawned = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("poll pf") {
                window_ms = window(spawned.elapsed());
                break st;
            }
            if spawned.elapsed() >= delay {
                let _ = child.kill(); // SIGKILL
                break child.wait().expect("wait for pf");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let finished =
            if status.success() {
                let report = fs::read(&stdout_path).expect("read push output");
                Some(parse_push(&report).unwrap_or_else(|| {
                    panic!("{name}: iteration {i}: push exited 0 without a report")
                }))
            } else {
                None
            };
        completed += u32::from(finished.is_some());
        if finished.is_none() {
            let waited = settle(&remote.ports);
            settled += u32::from(!waited.is_zero());
            longest_settle = longest_settle.max(waited);
        }
        let label = format!("crash-{i}");
        let ctx = format!(
            "{name}: iteration {i} (kill after {delay:?}, push finished first: {})",
            finished.is_some()
        );

        if remote.immutable {
            let (d, dir) = w.pull(&v1_ref, &label);
            assert_eq!(d, v1.digest, "{ctx}: v1's reference changed");
            assert!(same_tree(&w.path("v1"), &dir), "{ctx}: v1 restores wrong");
            match &finished {
                Some(p) => {
                    let (d, dir) = w.pull(&p.resolved, &format!("{label}-new"));
                    assert_eq!(d, p.digest, "{ctx}: the pushed root pulls another manifest");
                    assert!(
                        same_tree(&w.path(&v2_dir), &dir),
                        "{ctx}: v2 restores wrong"
                    );
                    at_v2 += 1;
                }
                None => at_v1 += 1,
            }
            continue;
        }
        let (d, dir) = w.pull(&remote.push_ref, &label);
        if d == v1.digest {
            assert!(
                finished.is_none(),
                "{ctx}: the push finished but the reference still shows v1"
            );
            assert!(same_tree(&w.path("v1"), &dir), "{ctx}: v1 restores wrong");
            at_v1 += 1;
        } else {
            if !same_tree(&w.path(&v2_dir), &dir) {
                let earlier = (0..i).find(|j| same_tree(&w.path(&v2(*j)), &dir));
                panic!(
                    "{ctx}: the reference shows {d}, neither v1 nor a complete v2 \
                     (it restores as v2 of iteration {earlier:?})"
                );
            }
            if let Some(p) = &finished {
                assert_eq!(d, p.digest, "{ctx}: the reference shows another push");
            }
            at_v2 += 1;
            // Back to v1, so the next kill again interrupts a v1 -> v2 change.
            v1 = w.push("v1", &remote.push_ref, &format!("store-reset-{i}"));
        }
    }

    // An uninterrupted push of the last v2 (whose blobs a killed push may
    // have left half-uploaded) now succeeds and pulls as that v2.
    let last = v2(n.saturating_sub(1));
    let p = w.push(&last, &remote.push_ref, "store-final");
    let final_ref = if remote.immutable {
        p.resolved.clone()
    } else {
        remote.push_ref.clone()
    };
    let (d, dir) = w.pull(&final_ref, "final");
    assert_eq!(d, p.digest, "{name}: the final push is not what pulls");
    assert!(same_tree(&w.path(&last), &dir), "{name}: v2 restores wrong");
    eprintln!(
        "{name}: {n} kills, first within {first_window_ms} ms (full push {full_push:?}), \
         last within {window_ms} ms: {at_v1} left v1, {at_v2} showed v2, \
         {completed} pushes finished first; after {settled} kills the server was still \
         finishing requests (up to {longest_settle:?}); {:?} in all",
        started.elapsed()
    );
}

#[cfg(feature = "oci")]
#[test]
fn kill_9_during_oci_push_never_leaves_a_torn_image() {
    use pf_testsupport::{OciAuth, OciRegistry};
    let reg = OciRegistry::start(OciAuth::Anonymous);
    crash_loop(&Remote {
        name: "oci",
        env: vec![],
        push_ref: format!("oci://{}/crash/img:latest", reg.host),
        calibration_ref: format!("oci://{}/crash/calibration:latest", reg.host),
        immutable: false,
        ports: vec![port_of(&reg.host)],
    });
}

#[cfg(feature = "s3")]
#[test]
fn kill_9_during_s3_push_never_leaves_a_torn_image() {
    let s3 = pf_testsupport::S3Server::start_seaweedfs();
    crash_loop(&Remote {
        name: "s3",
        env: vec![
            ("AWS_ENDPOINT_URL", s3.endpoint.clone()),
            ("AWS_REGION", s3.region.clone()),
            ("AWS_ACCESS_KEY_ID", s3.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key.clone()),
        ],
        push_ref: format!("s3://{}/crash/img:latest", s3.bucket),
        calibration_ref: format!("s3://{}/calibration/img:latest", s3.bucket),
        immutable: false,
        ports: vec![port_of(&s3.endpoint)],
    });
}

#[cfg(feature = "hf")]
#[test]
fn kill_9_during_hf_push_never_leaves_a_torn_image() {
    use pf_hub_testserver::{HubConfig, HubServer};
    const TOKEN: &str = "hf_crash_token_77aa";
    // The Hub test server runs on this runtime's workers while pf runs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hub = rt
        .block_on(HubServer::start(HubConfig::with_token(TOKEN).page_size(50)))
        .expect("start the Hub test server");
    crash_loop(&Remote {
        name: "hf",
        env: vec![
            ("HF_ENDPOINT", hub.url().to_string()),
            ("HF_TOKEN", TOKEN.into()),
        ],
        push_ref: "hf://pf-tester/crash".into(),
        calibration_ref: "hf://pf-tester/crash-calibration".into(),
        immutable: false,
        ports: vec![port_of(hub.url()), port_of(hub.storage_url())],
    });
    drop(hub);
}

#[cfg(feature = "ipfs")]
#[test]
fn kill_9_during_ipfs_push_never_leaves_a_torn_image() {
    let node = pf_testsupport::IpfsServer::start();
    crash_loop(&Remote {
        name: "ipfs",
        env: vec![("IPFS_API", node.api.clone())],
        push_ref: "ipfs://".into(),
        calibration_ref: "ipfs://".into(),
        immutable: true,
        ports: vec![port_of(&node.api)],
    });
}
