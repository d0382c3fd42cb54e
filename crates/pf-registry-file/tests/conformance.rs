//! The shared conformance suite on the file backend.

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_conformance::{run_all, Backend};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backend_conformance() {
    let b = FileBackend {
        dir: tempfile::tempdir().expect("tempdir"),
        n: AtomicU32::new(0),
    };
    run_all(&b, pf_registry_conformance::cases(8)).await;
}
