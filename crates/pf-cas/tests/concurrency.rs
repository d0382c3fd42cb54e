//! DirStore under concurrent writers: separate processes and threads writing
//! the same 8 MiB blob, while a reader checks that the final path never holds
//! a partial blob.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pf_cas::{BlobStore, Digest, DirStore};

const CHILD_ENV: &str = "PF_CAS_TEST_CHILD_ROOT";

fn big_blob() -> Vec<u8> {
    (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn tmp_is_empty(root: &Path) -> bool {
    fs::read_dir(root.join("tmp")).unwrap().count() == 0
}

/// Not a real test on its own: when re-executed by `processes_write_the_same_blob`
/// with CHILD_ENV set, it waits for the go file and writes the big blob.
#[test]
fn child_writer() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = Path::new(&root);
    let data = big_blob();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.join("go").exists() {
        assert!(Instant::now() < deadline, "parent never said go");
        std::thread::sleep(Duration::from_millis(1));
    }
    let ds = DirStore::open(root.join("store")).unwrap();
    let (d, n) = ds
        .put_stream(Some(&Digest::of(&data)), &mut &data[..])
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(ds.put(&data).unwrap(), d);
}

/// Polls the final blob path until `stop`; whenever the file exists it must
/// be complete and correct.
fn watch(path: std::path::PathBuf, want: Digest, len: usize, stop: Arc<AtomicBool>) -> usize {
    let mut seen = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(bytes) = fs::read(&path) {
            assert_eq!(bytes.len(), len, "partial blob visible at final path");
            assert_eq!(Digest::of(&bytes), want);
            seen += 1;
        }
    }
    seen
}

#[test]
fn processes_write_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = big_blob();
    let want = Digest::of(&data);
    let ds = DirStore::open(dir.path().join("store")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (p, s, l) = (ds.blob_path(&want), stop.clone(), data.len());
        std::thread::spawn(move || watch(p, want, l, s))
    };
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", "child_writer", "--test-threads=1", "--quiet"])
                .env(CHILD_ENV, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    fs::write(dir.path().join("go"), b"").unwrap();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a child writer failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(ds.get(&want).unwrap(), data);
    assert_eq!(ds.list().unwrap(), vec![want]);
    assert!(tmp_is_empty(ds.root()));
}

#[test]
fn threads_write_the_same_blob_while_a_reader_watches() {
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(big_blob());
    let want = Digest::of(&data);
    let ds = Arc::new(DirStore::open(dir.path()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (p, s, l) = (ds.blob_path(&want), stop.clone(), data.len());
        std::thread::spawn(move || watch(p, want, l, s))
    };
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let (ds, data) = (ds.clone(), data.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    ds.put(&data).unwrap()
                } else {
                    ds.put_stream(Some(&want), &mut &data[..]).unwrap().0
                }
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), want);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(ds.list().unwrap(), vec![want]);
    assert!(tmp_is_empty(ds.root()));
}

#[test]
fn list_after_puts_ignores_strays() {
    let dir = tempfile::tempdir().unwrap();
    let ds = DirStore::open(dir.path()).unwrap();
    let mut want: Vec<Digest> = (0..50u32)
        .map(|i| ds.put(&i.to_le_bytes()).unwrap())
        .collect();
    want.sort();
    // A stray temp, a misplaced blob-looking file, junk names: none are blobs.
    let a = Digest::of(b"misplaced");
    let wrong_shard = if a.shard() == "00" { "01" } else { "00" };
    fs::create_dir_all(ds.root().join("sha256").join(wrong_shard)).unwrap();
    fs::write(
        ds.root().join("sha256").join(wrong_shard).join(a.hex()),
        b"misplaced",
    )
    .unwrap();
    fs::write(ds.root().join("sha256").join("junk"), b"").unwrap();
    fs::write(ds.root().join("tmp").join(".tmpXYZ"), b"half").unwrap();
    assert_eq!(ds.list().unwrap(), want);
    // Reopening an existing store sees the same blobs.
    assert_eq!(DirStore::open(dir.path()).unwrap().list().unwrap(), want);
}
