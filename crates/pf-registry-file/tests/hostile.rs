//! A hostile `file://` repository: links, FIFOs and devices planted where
//! the manifest, its signature or a blob should be. pf must refuse them
//! promptly (no hang, no unbounded read), naming the file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, RegistryError, SignedImage};

/// Runs `fut` on its own runtime thread and fails (instead of hanging the
/// suite) if it has not finished after a generous bound. Today's code
/// blocked forever on a FIFO; the bound only turns that into a failure.
fn finishes<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(fut));
        // A blocked worker (today's FIFO open) would keep the runtime's
        // drop waiting: leak it instead.
        std::mem::forget(rt);
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the operation hung on a hostile repository file")
}

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

/// Pushes a small image to a fresh repository; returns its root and a blob path.
fn pushed_repo(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("repo");
    let store = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(7, 3).build(&*store, "hostile");
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    let signed = SignedImage::new(&img.manifest, None);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(reg.push(store, &signed)).expect("push");
    let blob = reg.transport().blob_path(&img.manifest.layers[0].digest);
    assert!(blob.is_file());
    (root, blob)
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

fn pull(root: &Path) -> Result<(), RegistryError> {
    let r = file_ref(root);
    finishes(async move {
        let reg = pf_registry_file::open(&r, &Config::default())?;
        reg.pull(Arc::new(MemoryStore::new()) as Arc<dyn BlobStore>)
            .await
            .map(|_| ())
    })
}

fn inspect(root: &Path) -> Result<(), RegistryError> {
    let r = file_ref(root);
    finishes(async move {
        let reg = pf_registry_file::open(&r, &Config::default())?;
        reg.inspect().await.map(|_| ())
    })
}

fn assert_refused(res: Result<(), RegistryError>, name: &str) {
    match res {
        Err(RegistryError::InvalidData { what, reason }) => {
            assert!(what.contains(name), "{what}: {reason}")
        }
        other => panic!("{name}: expected InvalidData, got {other:?}"),
    }
}

#[test]
fn manifest_linked_to_dev_zero_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = pushed_repo(dir.path());
    let m = root.join("manifest.json");
    std::fs::remove_file(&m).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &m).expect("symlink");
    assert_refused(inspect(&root), "manifest.json");
    assert_refused(pull(&root), "manifest.json");
}

#[test]
fn manifest_linked_to_a_regular_file_elsewhere_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = pushed_repo(dir.path());
    let m = root.join("manifest.json");
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::rename(&m, &elsewhere).expect("mv");
    std::os::unix::fs::symlink(&elsewhere, &m).expect("symlink");
    assert_refused(pull(&root), "manifest.json");
}

#[test]
fn fifo_as_manifest_or_signature_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = pushed_repo(dir.path());
    let m = root.join("manifest.json");
    let saved = std::fs::read(&m).expect("read manifest");
    mkfifo(&m);
    assert_refused(inspect(&root), "manifest.json");
    assert_refused(pull(&root), "manifest.json");
    // Restore the manifest; plant FIFOs where the signature is looked for.
    std::fs::remove_file(&m).expect("rm");
    std::fs::write(&m, &saved).expect("write");
    let d = pf_digest::Digest::of(&saved);
    let sig = root
        .join("signatures/sha256")
        .join(format!("{}.sig", d.hex()));
    std::fs::create_dir_all(sig.parent().expect("parent")).expect("mkdir");
    mkfifo(&sig);
    assert_refused(pull(&root), ".sig");
}

#[test]
fn fifo_or_device_as_blob_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, blob) = pushed_repo(dir.path());
    mkfifo(&blob);
    assert_refused(pull(&root), ".zst");
    std::fs::remove_file(&blob).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &blob).expect("symlink");
    assert_refused(pull(&root), ".zst");
}

#[test]
fn oversized_manifest_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = pushed_repo(dir.path());
    let m = root.join("manifest.json");
    let limit = pf_registry_core::manifest::MAX_MANIFEST_BYTES;
    std::fs::write(&m, vec![b' '; limit + 1]).expect("write");
    assert_refused(pull(&root), "manifest.json");
}

/// A ranged read of a blob follows the same rules: a FIFO, a link to a
/// device or to a regular file elsewhere is refused promptly, naming the file.
#[test]
fn ranged_reads_refuse_fifos_and_links_without_blocking() {
    use pf_registry_core::Transport;
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, blob) = pushed_repo(dir.path());
    let digest_hex = blob
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("blob file name")
        .to_string();
    let digest = pf_registry_core::Digest::parse(&format!("sha256:{digest_hex}")).expect("digest");
    let range = |root: &Path| {
        let t = pf_registry_file::FileTransport::new(&file_ref(root)).expect("transport");
        finishes(async move { t.get_blob_range(&digest, 0, 4).await.map(|_| ()) })
    };
    assert!(range(&root).is_ok(), "the intact blob reads");
    let elsewhere = dir.path().join("elsewhere.zst");
    std::fs::copy(&blob, &elsewhere).expect("copy");
    mkfifo(&blob);
    assert_refused(range(&root), ".zst");
    std::fs::remove_file(&blob).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &blob).expect("symlink");
    assert_refused(range(&root), ".zst");
    std::fs::remove_file(&blob).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, &blob).expect("symlink");
    assert_refused(range(&root), ".zst");
}
