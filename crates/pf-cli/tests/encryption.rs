//! End-to-end tests of `pf push --encrypt-to` / `pf pull --identity` on
//! the file backend: no plaintext in the repository, round trip, wrong
//! identity, tampering, copy without keys, dedup across versions, and
//! `pf ls` / `pf cat` with `--identity`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::Env;

/// Distinct markers that must never appear in the repository.
const NAMES: [&str; 3] = ["zebra-secret-notes.txt", "quokka-dir", "wombat-model.bin"];
const CONTENT: &str = "OPENAI_API_KEY=sk-live-5f2e8a7c1d9b4e6f";

/// A key pair from `pf keygen --encryption`: identity and recipient files.
struct Keys {
    id: String,
    rcp: String,
}

impl Env {
    fn pf(&self, args: &[&str]) -> Output {
        self.pf_in("store", args)
    }
    /// Runs `pf` (in the pushing store) and requires success; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        ok_output(args, self.pf(args))
    }
    fn keygen(&self, name: &str) -> Keys {
        let out = self.path(name);
        self.ok(&["keygen", "--encryption", "--out", out.to_str().unwrap()]);
        let s = |ext| out.with_extension(ext).to_str().unwrap().to_owned();
        Keys {
            id: s("identity"),
            rcp: s("recipient"),
        }
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
    /// `pf push WORLD REPO --encrypt-to R...` plus `extra`; its stdout.
    fn push(&self, world: &Path, repo: &str, to: &[&Keys], extra: &[&str]) -> String {
        self.ok(&push_args(world, repo, to, extra))
    }
    /// `pf pull REPO --identity ID... --into OUT` plus `extra`, into a
    /// fresh store and directory named after `out`.
    fn pull(&self, repo: &str, ids: &[&Keys], out: &str, extra: &[&str]) -> Output {
        let dest = self.path(out);
        let mut args = vec!["pull", repo, "--into", dest.to_str().unwrap()];
        for k in ids {
            args.extend(["--identity", k.id.as_str()]);
        }
        args.extend(extra);
        self.pf_in(&format!("pull-store-{out}"), &args)
    }
    /// [`Env::pull`], required to succeed; its stdout.
    fn pull_ok(&self, repo: &str, ids: &[&Keys], out: &str, extra: &[&str]) -> String {
        let o = self.pull(repo, ids, out, extra);
        ok_output(&["pull", repo], o)
    }
    /// Pulls into `out` with `id` and checks it restores `world` exactly.
    fn round_trip(&self, repo: &str, id: &Keys, out: &str, world: &Path) {
        self.pull_ok(repo, &[id], out, &[]);
        assert_same(world, &self.path(out));
    }
    /// [`Env::pull`], required to fail with exit 4 and restore nothing;
    /// its stderr.
    fn pull_refused(&self, repo: &str, ids: &[&Keys], out: &str, extra: &[&str]) -> String {
        let o = self.pull(repo, ids, out, extra);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(code(&o), 4, "{err}");
        let dest = self.path(out);
        assert!(
            !dest.exists() || fs::read_dir(&dest).unwrap().next().is_none(),
            "nothing restored"
        );
        err
    }
}

fn push_args<'a>(
    world: &'a Path,
    repo: &'a str,
    to: &[&'a Keys],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["push", world.to_str().unwrap(), repo];
    for k in to {
        args.extend(["--encrypt-to", k.rcp.as_str()]);
    }
    args.extend(extra);
    args
}

fn ok_output(args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "pf {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The key id `pf` shows for a recipient file (16 hex of the SHA-256 of
/// the public key).
fn key_id(k: &Keys) -> String {
    let t = fs::read_to_string(&k.rcp).unwrap();
    let hex = t.trim().rsplit(':').next().unwrap().to_owned();
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    sha256_hex(&bytes)[..16].to_owned()
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
    let alice = env.keygen("alice");
    let repo = env.repo("repo");
    env.push(&world, &repo, &[&alice], &["--agent", "quokka-agent"]);
    assert_no_plaintext(&env.path("repo"), &world);
    // inspect shows only the outer image.
    let shown = env.ok(&["inspect", &repo]);
    assert!(
        shown.contains("crypt.envelope") && !shown.contains("quokka"),
        "{shown}"
    );
    env.round_trip(&repo, &alice, "out", &world);
    // The pull opened each sealed pack as it arrived: its store holds the
    // envelope, the index and the tree, no pack (the world's are MBs).
    for f in files(&env.path("pull-store-out")) {
        let n = fs::metadata(&f).unwrap().len();
        assert!(
            n < 1_000_000,
            "{} ({n} bytes) kept by the pull",
            f.display()
        );
    }
    // A second version sends only what changed: the envelope, the sealed
    // index and one new sealed pack.
    fs::write(world.join("new-file"), "a small new file").unwrap();
    let rep = env.push(&world, &repo, &[&alice], &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&rep).unwrap();
    assert_eq!(v["blobs_uploaded"], 3, "{v}");
    assert_no_plaintext(&env.path("repo"), &world);
    env.round_trip(&repo, &alice, "out2", &world);
}

#[test]
fn a_wrong_or_missing_identity_is_exit_4_naming_the_key_ids() {
    let env = Env::new();
    let world = env.world();
    let (alice, bob, carol) = (env.keygen("alice"), env.keygen("bob"), env.keygen("carol"));
    let repo = env.repo("repo");
    env.push(&world, &repo, &[&alice, &bob], &[]);
    let err = env.pull_refused(&repo, &[&carol], "out", &[]);
    assert!(
        err.contains(&key_id(&alice)) && err.contains(&key_id(&bob)),
        "{err}"
    );
    let err = env.pull_refused(&repo, &[], "out", &[]);
    assert!(err.contains(&key_id(&alice)), "{err}");
    // The second recipient opens it, also when named after another
    // identity (--identity is repeatable).
    env.round_trip(&repo, &bob, "out", &world);
    env.pull_ok(&repo, &[&carol, &bob], "out3", &[]);
    assert_same(&world, &env.path("out3"));
}

#[test]
fn a_tampered_pack_fails_and_restores_nothing() {
    let env = Env::new();
    let world = env.world();
    let alice = env.keygen("alice");
    let repo = env.repo("repo");
    env.push(&world, &repo, &[&alice], &[]);
    let biggest = files(&env.path("repo"))
        .into_iter()
        .max_by_key(|f| fs::metadata(f).unwrap().len())
        .unwrap();
    let mut raw = fs::read(&biggest).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x10;
    fs::write(&biggest, raw).unwrap();
    env.pull_refused(&repo, &[&alice], "out", &[]);
}

#[test]
fn copy_keeps_an_encrypted_image_encrypted_without_the_identity() {
    let env = Env::new();
    let world = env.world();
    let alice = env.keygen("alice");
    let (repo, copy) = (env.repo("repo"), env.repo("copy"));
    env.push(&world, &repo, &[&alice], &[]);
    // Another store: the copier never held the plaintext or the key.
    ok_output(
        &["copy"],
        env.pf_in("copier-store", &["copy", &repo, &copy]),
    );
    assert_no_plaintext(&env.path("copy"), &world);
    assert_no_plaintext(&env.path("copier-store"), &world);
    env.round_trip(&copy, &alice, "out", &world);
}

#[test]
fn adding_a_recipient_rewraps_the_key_and_signatures_are_checked_before_opening() {
    let env = Env::new();
    let world = env.world();
    let (alice, bob) = (env.keygen("alice"), env.keygen("bob"));
    let signing = env.path("signing");
    env.ok(&["keygen", "--out", signing.to_str().unwrap()]);
    let other = env.path("other");
    env.ok(&["keygen", "--out", other.to_str().unwrap()]);
    let (key, public) = (signing.with_extension("key"), signing.with_extension("pub"));
    let repo = env.repo("repo");
    let k = key.to_str().unwrap();
    env.push(&world, &repo, &[&alice], &["--key", k]);
    // Same content, one more recipient: only the new envelope (and the
    // sealed index, when the snapshot's date changed) is sent; every
    // sealed pack of the 3 MB world is already there.
    let rep = env.push(&world, &repo, &[&alice, &bob], &["--key", k, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&rep).unwrap();
    let sent = v["blobs_uploaded"].as_u64().unwrap();
    assert!((1..=2).contains(&sent), "{v}");
    assert!(v["raw_bytes_uploaded"].as_u64().unwrap() < 100_000, "{v}");
    assert_eq!(v["signed"], true, "{v}");
    // A pull trusting another key fails on the signature (exit 4) before
    // anything is opened or restored; trusting the signer, bob opens it.
    let wrong = other.with_extension("pub");
    env.pull_refused(&repo, &[&bob], "out", &["--trust", wrong.to_str().unwrap()]);
    assert!(!env.path("out").exists());
    let got = env.pull_ok(
        &repo,
        &[&bob],
        "out",
        &["--trust", public.to_str().unwrap(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["verification"]["status"], "verified", "{v}");
    assert_eq!(v["encrypted"], true);
    assert_same(&world, &env.path("out"));
}

#[test]
fn sealed_packs_gone_from_the_destination_are_sent_again() {
    let env = Env::new();
    let world = env.world();
    let alice = env.keygen("alice");
    let repo = env.repo("repo");
    env.push(&world, &repo, &[&alice], &[]);
    // The repository is reset (a gc, a new bucket): the next push is
    // chunked against the first, whose sealed packs are no longer there;
    // they are sent again (sealed again from the plaintext).
    fs::remove_dir_all(env.path("repo")).unwrap();
    fs::write(world.join("later.txt"), "written later").unwrap();
    env.push(&world, &repo, &[&alice], &[]);
    env.round_trip(&repo, &alice, "out", &world);
    assert_no_plaintext(&env.path("repo"), &world);
}

#[test]
fn ls_and_cat_open_an_encrypted_image_with_an_identity() {
    let env = Env::new();
    let world = env.world();
    let (alice, bob) = (env.keygen("alice"), env.keygen("bob"));
    let repo = env.repo("repo");
    env.push(&world, &repo, &[&alice], &[]);
    let secret = format!("{}/{}", NAMES[1], NAMES[0]);
    // ls: the plaintext tree, from the envelope and sealed index alone
    // (the ls store holds no sealed pack: every blob is small).
    let ls = ok_output(
        &["ls"],
        env.pf_in("ls-store", &["ls", &repo, "--identity", &alice.id]),
    );
    assert!(ls.contains(&secret) && ls.contains(NAMES[2]), "{ls}");
    for f in files(&env.path("ls-store")) {
        let n = fs::metadata(&f).unwrap().len();
        assert!(n < 1_000_000, "{} ({n} bytes) fetched by ls", f.display());
    }
    let sub = env.pf_in(
        "ls-store",
        &[
            "ls",
            &repo,
            NAMES[1],
            "--json",
            "--identity",
            &bob.id,
            "--identity",
            &alice.id,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ok_output(&["ls"], sub)).unwrap();
    assert!(
        v.to_string().contains(NAMES[0]) && !v.to_string().contains(NAMES[2]),
        "{v}"
    );
    // cat: one file's bytes, through a fresh store each.
    for (store, path) in [("cat-store", secret.as_str()), ("cat-store2", NAMES[2])] {
        let o = env.pf_in(store, &["cat", &repo, path, "--identity", &alice.id]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stdout == fs::read(world.join(path)).unwrap(), "{path}");
    }
    let o = env.pf_in(
        "cat-store",
        &["cat", &repo, "no/such", "--identity", &alice.id],
    );
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    // Without an identity, or with one the image was not sealed for: exit
    // 4 naming alice's key id, and no byte of the file.
    for ids in [&[][..], &["--identity", bob.id.as_str()][..]] {
        for cmd in [&["ls", &repo][..], &["cat", &repo, &secret][..]] {
            let args: Vec<&str> = cmd.iter().chain(ids).copied().collect();
            let o = env.pf_in("fresh-store", &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(code(&o), 4, "{args:?}: {err}");
            assert!(err.contains(&key_id(&alice)), "{args:?}: {err}");
            assert!(o.stdout.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn an_encrypted_pull_with_include_fetches_only_the_packs_that_hold_the_path() {
    let env = Env::new();
    let alice = env.keygen("alice");
    // Two incompressible 24 MiB files: their bytes land in different
    // sealed packs (about 16 MiB each), but for the one they may share.
    let w = env.path("two");
    fs::create_dir_all(&w).unwrap();
    fs::write(w.join("a.bin"), pf_testsupport::noise(24 << 20, 1)).unwrap();
    fs::write(w.join("b.bin"), pf_testsupport::noise(24 << 20, 2)).unwrap();
    let repo = env.repo("repo");
    env.push(&w, &repo, &[&alice], &[]);
    let whole: u64 = files(&env.path("repo"))
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    let out = env.pull_ok(&repo, &[&alice], "part", &["--include", "a.bin", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fetched = v["wire_bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched < whole * 3 / 4,
        "fetched {fetched} of {whole} bytes for half the image"
    );
    assert!(fetched > 24 << 20, "fetched {fetched}: less than a.bin");
    assert_eq!(
        fs::read(env.path("part").join("a.bin")).unwrap(),
        fs::read(w.join("a.bin")).unwrap()
    );
    assert!(!env.path("part").join("b.bin").exists());
}
