//! End-to-end tests of `pf push --encrypt-to` / `pf pull --identity` on
//! the file backend: no plaintext in the repository, round trip, wrong
//! identity, tampering, copy without keys, dedup across versions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    tmp: tempfile::TempDir,
}

/// Distinct markers that must never appear in the repository.
const NAMES: [&str; 3] = ["zebra-secret-notes.txt", "quokka-dir", "wombat-model.bin"];
const CONTENT: &str = "OPENAI_API_KEY=sk-live-5f2e8a7c1d9b4e6f";

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn pf(&self, args: &[&str]) -> Output {
        self.pf_in("store", args)
    }
    /// `pf` with its local store in `store` (pulls use a fresh one, so
    /// every blob comes from the repository).
    fn pf_in(&self, store: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pf"))
            .args(args)
            .env("PF_STORE", self.path(store))
            .env_remove("PF_KEY")
            .env_remove("PF_TRUST")
            .env_remove("PF_IDENTITY")
            .output()
            .expect("run pf")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = if args[0] == "pull" {
            self.pf_in(&format!("pull-store-{}", args.len()), args)
        } else {
            self.pf(args)
        };
        assert!(
            o.status.success(),
            "pf {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn repo(&self, name: &str) -> String {
        format!("file://{}", self.path(name).display())
    }
    fn keygen(&self, name: &str) -> (String, String) {
        let out = self.path(name);
        self.ok(&["keygen", "--encryption", "--out", out.to_str().unwrap()]);
        let id = out.with_extension("identity");
        let rcp = out.with_extension("recipient");
        (
            id.to_str().unwrap().to_owned(),
            rcp.to_str().unwrap().to_owned(),
        )
    }
    /// The world: a secret file, a directory, a multi-chunk file.
    fn world(&self) -> PathBuf {
        let w = self.path("world");
        fs::create_dir_all(w.join(NAMES[1])).unwrap();
        fs::write(w.join(NAMES[1]).join(NAMES[0]), CONTENT.repeat(50)).unwrap();
        let big: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(w.join(NAMES[2]), big).unwrap();
        w
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn sha256_hex(b: &[u8]) -> String {
    let o = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_owned()
}

/// Every stored byte of `repo` (raw, and each zstd blob decoded) is free
/// of the world's names, contents and the contents' SHA-256 digests.
fn assert_no_plaintext(repo: &Path, world: &Path) {
    let mut needles: Vec<Vec<u8>> = NAMES.iter().map(|n| n.as_bytes().to_vec()).collect();
    needles.push(CONTENT.as_bytes().to_vec());
    needles.push(b"sk-live".to_vec());
    for f in files(world) {
        let bytes = fs::read(&f).unwrap();
        needles.push(bytes[..64.min(bytes.len())].to_vec());
        needles.push(sha256_hex(&bytes).into_bytes());
    }
    let stored = files(repo);
    assert!(stored.len() >= 3, "{stored:?}");
    for f in stored {
        let raw = fs::read(&f).unwrap();
        let mut views = vec![raw.clone()];
        if let Ok(d) = zstd::stream::decode_all(&raw[..]) {
            views.push(d);
        }
        for v in &views {
            for n in &needles {
                assert!(
                    !v.windows(n.len()).any(|w| w == &n[..]),
                    "{} holds plaintext {:?}",
                    f.display(),
                    String::from_utf8_lossy(&n[..n.len().min(40)])
                );
            }
        }
    }
}

fn assert_same(a: &Path, b: &Path) {
    for f in files(a) {
        let rel = f.strip_prefix(a).unwrap();
        assert_eq!(
            fs::read(&f).unwrap(),
            fs::read(b.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
    assert_eq!(files(a).len(), files(b).len());
}

#[test]
fn an_encrypted_push_stores_no_plaintext_and_restores_byte_for_byte() {
    let env = Env::new();
    let world = env.world();
    let (id, rcp) = env.keygen("alice");
    let repo = env.repo("repo");
    env.ok(&[
        "push",
        world.to_str().unwrap(),
        &repo,
        "--encrypt-to",
        &rcp,
        "--agent",
        "quokka-agent",
    ]);
    assert_no_plaintext(&env.path("repo"), &world);
    // inspect shows only the outer image.
    let shown = env.ok(&["inspect", &repo]);
    assert!(
        shown.contains("crypt.envelope") && !shown.contains("quokka"),
        "{shown}"
    );
    let out = env.path("out");
    env.ok(&[
        "pull",
        &repo,
        "--identity",
        &id,
        "--into",
        out.to_str().unwrap(),
    ]);
    assert_same(&world, &out);
    // A second version sends only what changed: the envelope, the sealed
    // index and one new sealed pack.
    fs::write(world.join("new-file"), "a small new file").unwrap();
    let rep = env.ok(&[
        "push",
        world.to_str().unwrap(),
        &repo,
        "--encrypt-to",
        &rcp,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&rep).unwrap();
    assert_eq!(v["blobs_uploaded"], 3, "{v}");
    assert_no_plaintext(&env.path("repo"), &world);
    let out2 = env.path("out2");
    env.ok(&[
        "pull",
        &repo,
        "--identity",
        &id,
        "--into",
        out2.to_str().unwrap(),
    ]);
    assert_same(&world, &out2);
}

#[test]
fn a_wrong_or_missing_identity_is_exit_4_naming_the_key_ids() {
    let env = Env::new();
    let world = env.world();
    let (_, rcp_a) = env.keygen("alice");
    let (id_b, rcp_b) = env.keygen("bob");
    let (id_c, _) = env.keygen("carol");
    let repo = env.repo("repo");
    env.ok(&[
        "push",
        world.to_str().unwrap(),
        &repo,
        "--encrypt-to",
        &rcp_a,
        "--encrypt-to",
        &rcp_b,
    ]);
    let key_id = |p: &str| {
        let t = fs::read_to_string(p).unwrap();
        let hex = t.trim().rsplit(':').next().unwrap().to_owned();
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        sha256_hex(&bytes)[..16].to_owned()
    };
    let out = env.path("out");
    let o = env.pf_in(
        "pull-store",
        &[
            "pull",
            &repo,
            "--identity",
            &id_c,
            "--into",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&key_id(&rcp_a)) && err.contains(&key_id(&rcp_b)),
        "{err}"
    );
    assert!(!out.exists(), "nothing restored");
    let o = env.pf_in(
        "pull-store",
        &["pull", &repo, "--into", out.to_str().unwrap()],
    );
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&key_id(&rcp_a)));
    assert!(!out.exists(), "nothing restored");
    // The second recipient opens it.
    env.ok(&[
        "pull",
        &repo,
        "--identity",
        &id_b,
        "--into",
        out.to_str().unwrap(),
    ]);
    assert_same(&world, &out);
}

#[test]
fn a_tampered_pack_fails_and_restores_nothing() {
    let env = Env::new();
    let world = env.world();
    let (id, rcp) = env.keygen("alice");
    let repo = env.repo("repo");
    env.ok(&["push", world.to_str().unwrap(), &repo, "--encrypt-to", &rcp]);
    let biggest = files(&env.path("repo"))
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    let mut raw = fs::read(&biggest).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x10;
    fs::write(&biggest, raw).unwrap();
    let out = env.path("out");
    let o = env.pf_in(
        "pull-store",
        &[
            "pull",
            &repo,
            "--identity",
            &id,
            "--into",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists() || fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn copy_keeps_an_encrypted_image_encrypted_without_the_identity() {
    let env = Env::new();
    let world = env.world();
    let (id, rcp) = env.keygen("alice");
    let (repo, copy) = (env.repo("repo"), env.repo("copy"));
    env.ok(&["push", world.to_str().unwrap(), &repo, "--encrypt-to", &rcp]);
    // Another store: the copier never held the plaintext or the key.
    let o = Command::new(env!("CARGO_BIN_EXE_pf"))
        .args(["copy", &repo, &copy])
        .env("PF_STORE", env.path("copier-store"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_plaintext(&env.path("copy"), &world);
    assert_no_plaintext(&env.path("copier-store"), &world);
    let out = env.path("out");
    env.ok(&[
        "pull",
        &copy,
        "--identity",
        &id,
        "--into",
        out.to_str().unwrap(),
    ]);
    assert_same(&world, &out);
}

#[test]
fn adding_a_recipient_rewraps_the_key_and_signatures_are_checked_before_opening() {
    let env = Env::new();
    let world = env.world();
    let (_, rcp_a) = env.keygen("alice");
    let (id_b, rcp_b) = env.keygen("bob");
    let signing = env.path("signing");
    env.ok(&["keygen", "--out", signing.to_str().unwrap()]);
    let other = env.path("other");
    env.ok(&["keygen", "--out", other.to_str().unwrap()]);
    let (key, public) = (signing.with_extension("key"), signing.with_extension("pub"));
    let repo = env.repo("repo");
    let w = world.to_str().unwrap();
    let k = key.to_str().unwrap();
    env.ok(&["push", w, &repo, "--encrypt-to", &rcp_a, "--key", k]);
    // Same content, one more recipient: only the new envelope (and the
    // sealed index, when the snapshot's date changed) is sent; every
    // sealed pack of the 3 MB world is already there.
    let rep = env.ok(&[
        "push",
        w,
        &repo,
        "--encrypt-to",
        &rcp_a,
        "--encrypt-to",
        &rcp_b,
        "--key",
        k,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&rep).unwrap();
    let sent = v["blobs_uploaded"].as_u64().unwrap();
    assert!((1..=2).contains(&sent), "{v}");
    assert!(v["raw_bytes_uploaded"].as_u64().unwrap() < 100_000, "{v}");
    assert_eq!(v["signed"], true, "{v}");
    // A pull trusting another key fails on the signature (exit 4) before
    // anything is opened or restored; trusting the signer, bob opens it.
    let out = env.path("out");
    let o = env.pf_in(
        "pull-store",
        &[
            "pull",
            &repo,
            "--identity",
            &id_b,
            "--trust",
            other.with_extension("pub").to_str().unwrap(),
            "--into",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists());
    let got = env.ok(&[
        "pull",
        &repo,
        "--identity",
        &id_b,
        "--trust",
        public.to_str().unwrap(),
        "--into",
        out.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["verification"]["status"], "verified", "{v}");
    assert_eq!(v["encrypted"], true);
    assert_same(&world, &out);
}

#[test]
fn sealed_packs_gone_from_the_destination_are_sent_again() {
    let env = Env::new();
    let world = env.world();
    let (id, rcp) = env.keygen("alice");
    let repo = env.repo("repo");
    let w = world.to_str().unwrap();
    env.ok(&["push", w, &repo, "--encrypt-to", &rcp]);
    // The repository is reset (a gc, a new bucket): the next push is
    // chunked against the first, whose sealed packs are no longer there;
    // they are sent again (from the local store, where sealing put them).
    fs::remove_dir_all(env.path("repo")).unwrap();
    fs::write(world.join("later.txt"), "written later").unwrap();
    let o = env.pf(&["push", w, &repo, "--encrypt-to", &rcp]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = env.path("out");
    env.ok(&[
        "pull",
        &repo,
        "--identity",
        &id,
        "--into",
        out.to_str().unwrap(),
    ]);
    assert_same(&world, &out);
    assert_no_plaintext(&env.path("repo"), &world);
}
