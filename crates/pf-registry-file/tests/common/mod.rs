//! The file backend as a target of the shared suites: a temporary directory.

use std::sync::atomic::{AtomicU32, Ordering};

use pf_registry_conformance::{Backend, Target};
use pf_registry_core::{Config, ImageRef, Transport};
use pf_registry_file::FileTransport;

struct FileBackend {
    dir: tempfile::TempDir,
    n: AtomicU32,
}

impl Backend for FileBackend {
    fn name(&self) -> String {
        format!("file {}", self.dir.path().display())
    }
    fn fresh_ref(&self, label: &str) -> ImageRef {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let p = self.dir.path().join(format!("{label}-{n}"));
        ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
    }
    fn generated_cases(&self) -> u32 {
        8
    }
    fn crash_kills(&self) -> u64 {
        12
    }
}

fn open(r: &ImageRef, _c: &Config) -> pf_registry_core::Result<Box<dyn Transport>> {
    Ok(Box::new(FileTransport::new(r)?))
}

/// The `file` target.
pub fn target() -> Target {
    Target::new("file", open, |_| FileBackend {
        dir: tempfile::tempdir().expect("tempdir"),
        n: AtomicU32::new(0),
    })
    .without_proxy()
}
