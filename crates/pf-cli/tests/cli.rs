//! End-to-end tests of the `pf` binary on the file backend.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{text, Env};

impl Env {
    fn pf(&self, args: &[&str]) -> Output {
        self.pf_in("store", args)
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/nested")).unwrap();
    fs::write(root.join("etc/config.json"), b"{\"a\": 1}").unwrap();
    fs::write(root.join("etc/nested/empty"), b"").unwrap();
    let big: Vec<u8> = (0..9_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    symlink("etc/config.json", root.join("link")).unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    for rel in ["etc/config.json", "etc/nested/empty", "big.bin"] {
        assert_eq!(
            fs::read(a.join(rel)).unwrap(),
            fs::read(b.join(rel)).unwrap(),
            "{rel} differs"
        );
    }
    assert_eq!(
        fs::read_link(b.join("link")).unwrap(),
        PathBuf::from("etc/config.json")
    );
}

#[test]
fn push_pull_restore_signed_roundtrip() {
    let env = Env::new();
    make_tree(&env.path("src"));
    let out = env.pf(&["keygen", "--out", env.path("k").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let repo = env.repo("repo");
    let out = env.pf(&[
        "push",
        env.path("src").to_str().unwrap(),
        &repo,
        "--key",
        env.path("k.key").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let resolved = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        resolved.starts_with(&repo) && resolved.contains("@sha256:"),
        "{resolved}"
    );

    // Pull with a fresh store, verifying the signature, and restore.
    let out = env.pf_in(
        "store2",
        &[
            "pull",
            &repo,
            "--into",
            env.path("dst").to_str().unwrap(),
            "--trust",
            env.path("k.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verified"),
        "{}",
        text(&out)
    );
    assert_same_tree(&env.path("src"), &env.path("dst"));

    // Re-push unchanged: nothing uploaded.
    let out = env.pf(&["--json", "push", env.path("src").to_str().unwrap(), &repo]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["blobs_uploaded"], 0, "{v}");

    // Without trust: reported as signed by unknown key / unsigned, not rejected.
    let out = env.pf_in("store3", &["pull", &resolved]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Wrong trusted key: exit 4.
    let out = env.pf(&["keygen", "--out", env.path("other").to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    let first = env.pf_in(
        "store4",
        &[
            "pull",
            &resolved,
            "--trust",
            env.path("other.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&first), 4, "{}", text(&first));

    // inspect and exists
    let out = env.pf(&["inspect", &repo]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(pf_registry::manifest::FS_LAYER_ROLE));
    assert_eq!(code(&env.pf(&["exists", &repo])), 0);
    assert_eq!(code(&env.pf(&["exists", &env.repo("nothing-here")])), 2);

    // copy keeps the signature
    let repo2 = env.repo("copy");
    let out = env.pf(&["copy", &resolved, &repo2]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.pf_in(
        "store5",
        &[
            "pull",
            &repo2,
            "--trust",
            env.path("k.pub").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// Many small files (packed), a chunked file and an empty one.
fn make_packed_tree(root: &Path) {
    make_tree(root);
    for i in 0..200 {
        let d = root.join(format!("notes/{}", i % 5));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("n{i}.json")),
            format!("{{\"n\": {i}}}").repeat(i + 1),
        )
        .unwrap();
    }
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(shards) = fs::read_dir(dir) {
        for shard in shards {
            for f in fs::read_dir(shard.unwrap().path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out
}

/// A push reads file contents from the directory (cached stats included: a
/// second push of the unchanged tree to a new repository re-reads them), and
/// a restoring pull writes them straight into place: the local store keeps
/// only index blobs. A corrupt blob fails the pull and leaves no partial
/// restore behind.
#[test]
fn push_reads_the_source_and_pull_into_writes_files_in_place() {
    let env = Env::new();
    let src = env.path("src");
    make_packed_tree(&src);
    let (a, b) = (env.repo("a"), env.repo("b"));
    for repo in [&a, &b] {
        let out = env.pf(&["--json", "push", src.to_str().unwrap(), repo]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        // 200 small files and the small config are a pack or two, not 201 blobs.
        let total = v["blobs_total"].as_u64().unwrap();
        assert!(total < 20, "{v}");
        assert_eq!(v["blobs_uploaded"], v["blobs_total"], "{v}");
    }
    // The push store holds the fs tree only, not copies of the files.
    assert_eq!(blob_files(&env.path("store/sha256")).len(), 1);

    let out = env.pf_in(
        "s2",
        &["pull", &b, "--into", env.path("dst").to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_same_tree(&src, &env.path("dst"));
    assert_eq!(blob_files(&env.path("s2/sha256")).len(), 1);

    // Corrupt every blob of repository a but its fs tree: exit 4, nothing left.
    let tree_blob = blob_files(&env.path("store/sha256"))[0].clone();
    let tree_name = tree_blob.file_name().unwrap().to_str().unwrap().to_string();
    for p in blob_files(&env.path("a/blobs/sha256")) {
        if !p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&tree_name)
        {
            fs::write(&p, zstd_frame(b"evil")).unwrap();
        }
    }
    let dst2 = env.path("dst2");
    let out = env.pf_in("s3", &["pull", &a, "--into", dst2.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        !dst2.exists(),
        "a failed restore must not leave files behind"
    );
}

/// A pack fills thousands of files; restoring it must not hold them all
/// open at once (run under a 64-descriptor limit).
#[test]
fn restoring_a_pack_of_thousands_of_files_fits_a_low_descriptor_limit() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        fs::write(src.join(format!("f{i:04}")), format!("small file {i}")).unwrap();
    }
    let repo = env.repo("repo");
    let out = env.pf(&["push", src.to_str().unwrap(), &repo]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let dst = env.path("dst");
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --store \"$1\" pull \"$2\" --into \"$3\"")
        .arg(env!("CARGO_BIN_EXE_pf"))
        .arg(env.path("s2"))
        .arg(&repo)
        .arg(&dst)
        .output()
        .expect("run pf");
    assert_eq!(code(&out), 0, "{}", text(&out));
    for i in 0..3000 {
        let name = format!("f{i:04}");
        assert_eq!(
            fs::read(dst.join(&name)).unwrap(),
            format!("small file {i}").into_bytes(),
            "{name}"
        );
    }
}

#[test]
fn exit_codes_for_bad_input() {
    let env = Env::new();
    assert_eq!(code(&env.pf(&["pull", "ftp://nope/x"])), 1);
    assert_eq!(code(&env.pf(&["pull", "oci://HOST/UPPER"])), 1);
    assert_eq!(code(&env.pf(&["frobnicate"])), 1);
    assert_eq!(code(&env.pf(&["pull", &env.repo("missing")])), 2);
    let out = env.pf(&["--json", "pull", &env.repo("missing")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json error");
    assert_eq!(v["exit_code"], 2);
}

#[test]
fn tampered_blob_on_disk_is_exit_4() {
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/a.txt"), vec![b'x'; 10_000]).unwrap();
    let repo = env.repo("repo");
    assert_eq!(
        code(&env.pf(&["push", env.path("src").to_str().unwrap(), &repo])),
        0
    );
    // Replace every stored blob with a valid zstd frame of other content.
    let mut n = 0;
    for shard in fs::read_dir(env.path("repo/blobs/sha256")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            fs::write(&p, zstd_frame(b"evil")).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2);
    let out = env.pf_in("fresh", &["pull", &repo]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("integrity"),
        "{}",
        text(&out)
    );
}

fn zstd_frame(raw: &[u8]) -> Vec<u8> {
    // Minimal zstd frame: single segment, 1-byte content size, one raw block.
    let mut v = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, raw.len() as u8];
    let header = 1u32 | ((raw.len() as u32) << 3);
    v.extend_from_slice(&header.to_le_bytes()[..3]);
    v.extend_from_slice(raw);
    v
}

#[test]
fn restore_refuses_escaping_symlinks_and_nonempty_dirs() {
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/ok.txt"), b"fine").unwrap();
    symlink("../../../../etc/passwd", env.path("src/evil")).unwrap();
    let repo = env.repo("repo");
    let out = env.pf(&["push", env.path("src").to_str().unwrap(), &repo]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = env.pf(&["pull", &repo, "--into", env.path("dst").to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("outside"),
        "{}",
        text(&out)
    );
    assert!(!env.path("dst/evil").exists());

    fs::remove_file(env.path("src/evil")).unwrap();
    assert_eq!(
        code(&env.pf(&["push", env.path("src").to_str().unwrap(), &repo])),
        0
    );
    fs::create_dir_all(env.path("full")).unwrap();
    fs::write(env.path("full/precious"), b"keep me").unwrap();
    let out = env.pf(&["pull", &repo, "--into", env.path("full").to_str().unwrap()]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert_eq!(fs::read(env.path("full/precious")).unwrap(), b"keep me");
}

/// Special files (fifo, socket) and names that are not UTF-8 are skipped with
/// a warning naming them; everything else round-trips, and the restore never
/// creates them.
#[test]
fn special_files_and_non_utf8_names_are_skipped_with_a_warning() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let fifo = src.join("pipe");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success(), "mkfifo failed");
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).expect("bind socket");
    let bad_name = src.join(OsStr::from_bytes(b"bad-\xff-name"));
    fs::write(&bad_name, b"unnameable").expect("write non-UTF-8 name");
    let repo = env.repo("repo");
    let out = env.pf(&["push", src.to_str().expect("utf-8 path"), &repo]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for what in ["pipe", "sock", "bad-"] {
        assert!(
            err.lines()
                .any(|l| l.contains("warning") && l.contains(what)),
            "no warning naming {what}: {}",
            text(&out)
        );
    }
    let dst = env.path("dst");
    let out = env.pf(&["pull", &repo, "--into", dst.to_str().expect("utf-8 path")]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_same_tree(&src, &dst);
    for name in [
        OsStr::new("pipe"),
        OsStr::new("sock"),
        OsStr::from_bytes(b"bad-\xff-name"),
    ] {
        assert!(
            fs::symlink_metadata(dst.join(name)).is_err(),
            "{name:?} was restored"
        );
    }
}

/// Every command, run with credentials in the environment and a private key
/// on disk, never prints a secret or a private key byte.
#[test]
fn no_secret_in_any_output() {
    let env = Env::new();
    fs::create_dir_all(env.path("src")).unwrap();
    fs::write(env.path("src/a"), b"data").unwrap();
    let secrets = [
        "oci-password-5f2b9c",
        "oci-token-8d1e77",
        "hf_token_c0ffee1234",
        "aws-secret-9a8b7c6d",
        "aws-session-tok-4321",
    ];
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_pf"))
            .args(args)
            .env("PF_STORE", env.path("store"))
            .env("PF_OCI_USERNAME", "someone")
            .env("PF_OCI_PASSWORD", secrets[0])
            .env("PF_OCI_TOKEN", secrets[1])
            .env("HF_TOKEN", secrets[2])
            .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", secrets[3])
            .env("AWS_SESSION_TOKEN", secrets[4])
            .env("PF_LOG", "trace")
            .output()
            .expect("run pf")
    };
    let key = env.path("k");
    let mut outputs = vec![run(&["keygen", "--out", key.to_str().unwrap()])];
    let pem = fs::read_to_string(env.path("k.key")).unwrap();
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let repo = env.repo("repo");
    let src = env.path("src");
    let dst = env.path("dst");
    let keyfile = env.path("k.key");
    let pubfile = env.path("k.pub");
    let copy_repo = env.repo("copy");
    let cmds: Vec<Vec<&str>> = vec![
        vec![
            "push",
            src.to_str().unwrap(),
            &repo,
            "--key",
            keyfile.to_str().unwrap(),
        ],
        vec![
            "--json",
            "push",
            src.to_str().unwrap(),
            &repo,
            "--key",
            keyfile.to_str().unwrap(),
        ],
        vec![
            "pull",
            &repo,
            "--into",
            dst.to_str().unwrap(),
            "--trust",
            pubfile.to_str().unwrap(),
        ],
        vec!["inspect", &repo],
        vec!["exists", &repo],
        vec!["copy", &repo, &copy_repo],
        // Remote backends with credentials set (compiled in or not, reachable or not).
        vec!["push", src.to_str().unwrap(), "oci://127.0.0.1:1/x/y:z"],
        vec!["pull", "s3://bucket-x/prefix"],
        vec!["pull", "hf://owner/repo"],
        vec!["--json", "pull", "oci://127.0.0.1:1/x/y:z"],
    ];
    for c in &cmds {
        outputs.push(run(c));
    }
    for (i, o) in outputs.iter().enumerate() {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        for s in &secrets {
            assert!(!all.contains(s), "command {i} leaked {s:?}:\n{all}");
        }
        assert!(
            !all.contains(&pem_body[..24]),
            "command {i} leaked private key material:\n{all}"
        );
    }
}
