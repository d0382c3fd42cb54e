//! Lifecycle cases on the file backend, including the concurrent push + gc
//! loop (`PF_GC_ROUNDS` raises its 50 rounds).

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_conformance::{lifecycle, Backend};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_registry_file::FileTransport;

struct FileBackend {
    dir: tempfile::TempDir,
    n: AtomicU32,
}

impl Backend for FileBackend {
    fn name(&self) -> String {
        "file".into()
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let p = self.dir.path().join(format!("{label}-{n}"));
        ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
    }
    fn transport(&self, r: &ImageRef, _c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
        Ok(Box::new(FileTransport::new(r)?))
    }
}

fn backend() -> FileBackend {
    FileBackend {
        dir: tempfile::tempdir().expect("tempdir"),
        n: AtomicU32::new(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_tags_and_log() {
    lifecycle::tags_and_log(&backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_rm_version() {
    lifecycle::rm_version(&backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_verify_finds_damage() {
    lifecycle::verify_finds_damage(&backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_retain_then_gc() {
    let (after, fresh) = lifecycle::retain_then_gc(&backend())
        .await
        .expect("file supports lifecycle");
    eprintln!("file: 20 versions, keep-last 3, gc: {after} B; fresh push of the 3: {fresh} B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_gc_refuses_bad_manifests() {
    lifecycle::gc_refuses_bad_manifests(&backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_concurrent_push_and_gc() {
    let rounds = lifecycle::concurrent_push_and_gc(&backend(), 50).await;
    eprintln!("file: {rounds} rounds of concurrent push + gc");
    assert!(rounds >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_retain_policies() {
    lifecycle::retain_policies(&backend()).await;
}
