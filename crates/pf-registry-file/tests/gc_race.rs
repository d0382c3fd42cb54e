//! A push whose commit is refused for a missing blob (a gc that started
//! before the push's marker deleted a blob dedup had found) waits for that
//! gc to finish before it uploads again, so its next commit cannot be
//! refused by the same gc — however many blobs that gc deletes meanwhile.
//!
//! The gc is staged: its record under `locks/` is live for a while, and
//! while it is, every commit first deletes one more closure blob (a gc
//! deleting in steps). A push that retried at once would see a blob gone
//! at each of its commits and give up.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::{ImageSpec, TestImage};
use pf_registry_core::transport::{
    ByteStream, CommitRequest, EncodedBlob, FetchedManifest, UploadedBlob,
};
use pf_registry_core::{
    layout, Config, Digest, Engine, ImageRef, Registry, Result, SignedImage, Transport,
};
use pf_registry_file::FileTransport;

/// A staged gc: while `live`, each commit first deletes the next blob of
/// `victims`; the counters are what the test asserts.
#[derive(Default)]
struct Staged {
    live: AtomicBool,
    victims: Vec<Digest>,
    deleted: AtomicUsize,
    commits: AtomicUsize,
}

/// A file transport whose commits race the staged gc.
struct GcDuringCommit {
    inner: FileTransport,
    gc: Arc<Staged>,
}

#[async_trait]
impl Transport for GcDuringCommit {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.inner.missing(digests).await
    }
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.spool_dir()
    }
    fn wants_encoded_digest(&self) -> bool {
        self.inner.wants_encoded_digest()
    }
    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        self.inner.put_blob(blob).await
    }
    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        self.gc.commits.fetch_add(1, Ordering::SeqCst);
        if self.gc.live.load(Ordering::SeqCst) {
            let i = self.gc.deleted.fetch_add(1, Ordering::SeqCst);
            if let Some(d) = self.gc.victims.get(i % self.gc.victims.len()) {
                self.inner.delete_key(&layout::blob(d)).await?;
            }
        }
        self.inner.commit(req).await
    }
    async fn get_manifest(&self) -> Result<FetchedManifest> {
        self.inner.get_manifest().await
    }
    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        self.inner.get_blob(digest).await
    }
    fn keys(&self) -> Option<&dyn pf_registry_core::transport::KeyStore> {
        self.inner.keys()
    }
}

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_waits_for_the_running_gc_before_uploading_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    let src = Arc::new(MemoryStore::new());
    let img: TestImage = ImageSpec::sample(21, 8).build(&*src, "race");
    let signed = SignedImage::new(&img.manifest, None);

    // The blobs are in the repository already (an earlier push), so the
    // push under test deduplicates them all.
    let reg = pf_registry_file::open(&file_ref(&root), &Config::default()).expect("open");
    reg.push(src.clone(), &signed).await.expect("first push");
    let inner = reg.transport().clone();

    // A gc that started before the push: its record is live for 600 ms.
    let record = format!("{}/gc-staged.json", layout::LOCKS);
    let body = format!(
        r#"{{"kind":"gc","written_ms":{},"expires_ms":{},"blobs":[]}}"#,
        now_ms(),
        now_ms() + 120_000
    );
    inner
        .write_key(&record, body.as_bytes())
        .await
        .expect("gc record");
    let gc = Arc::new(Staged {
        live: AtomicBool::new(true),
        victims: img.closure.clone(),
        ..Staged::default()
    });
    {
        let (inner, gc, record) = (inner.clone(), gc.clone(), record.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            gc.live.store(false, Ordering::SeqCst);
            inner.delete_key(&record).await.expect("end gc");
        });
    }
    let engine = Engine::new(
        GcDuringCommit {
            inner,
            gc: gc.clone(),
        },
        Config::default(),
        None,
    );
    let report = engine
        .push(src.clone(), &signed)
        .await
        .expect("push racing a gc");
    assert_eq!(report.manifest_digest, signed.digest());
    let commits = gc.commits.load(Ordering::SeqCst);
    let deleted = gc.deleted.load(Ordering::SeqCst);
    assert!(deleted >= 1, "the staged gc never deleted a blob");
    assert_eq!(
        commits, 2,
        "one refused commit, then one after the gc ended ({deleted} blobs deleted)"
    );

    // Every blob is back and the image pulls whole.
    let out = Arc::new(MemoryStore::new());
    reg.pull(out.clone()).await.expect("pull");
    for d in &img.closure {
        assert_eq!(out.get(d).expect("pulled"), src.get(d).expect("source"));
    }
}
