//! A store that offers what it knows of an fs tree (see
//! [`KnownIndex`]) spares the push reading and parsing the tree: an
//! unchanged re-push never reads it, and a push that uploads still gets
//! the tree's frame plans, reading the tree only then.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::manifest::{self, is_fs_tree_media_type, FsTree, KnownIndex, Manifest};
use pf_registry_core::{Config, ImageRef, Registry, SignedImage};

/// `inner`, offering `known` and counting reads of the offered blobs.
struct Offering {
    inner: Arc<MemoryStore>,
    known: HashMap<Digest, Arc<KnownIndex>>,
    reads: AtomicUsize,
}

impl Offering {
    fn counted(&self, digest: &Digest) {
        if self.known.contains_key(digest) {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl BlobStore for Offering {
    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        self.counted(digest);
        self.inner.open(digest)
    }
    fn get(&self, digest: &Digest) -> pf_cas::Result<Vec<u8>> {
        self.counted(digest);
        self.inner.get(digest)
    }
    fn prepared(&self, digest: &Digest) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let k = self.known.get(digest)?.clone();
        Some(k)
    }
    pf_cas::forward_to!(inner: has, size, put, put_stream, put_stream_as, list);
}

fn file_ref(p: &Path) -> ImageRef {
    ImageRef::parse(&format!("file://{}", p.display())).expect("file ref")
}

/// The image's fs tree layer digest and parsed tree.
fn tree_of(m: &Manifest, store: &MemoryStore) -> (Digest, FsTree) {
    let l = m
        .layers
        .iter()
        .find(|l| is_fs_tree_media_type(&l.media_type))
        .expect("an fs tree layer");
    let bytes = store.get(&l.digest).expect("tree");
    (l.digest, FsTree::from_bytes(&bytes).expect("parse"))
}

#[test]
fn offered_trees_are_not_read_unless_an_upload_needs_their_plans() {
    let src = Arc::new(MemoryStore::new());
    // Large enough files that the tree has packs of many chunks.
    let mut spec = ImageSpec::sample(7, 12);
    spec.chunk_size = 2048;
    spec.pack_max = 16 * 1024;
    let img = spec.build(&*src, "a");
    let (tree_digest, tree) = tree_of(&img.manifest, &src);
    assert!(!tree.packs.is_empty(), "the sample has packs");
    let children = manifest::tree_children(&tree);
    let rt = tokio::runtime::Runtime::new().expect("rt");

    for offer in [
        KnownIndex::Children(children.clone()),
        KnownIndex::Tree(Arc::new(tree.clone())),
    ] {
        let what = format!("{offer:?}").chars().take(8).collect::<String>();
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = pf_registry_file::open(&file_ref(&dir.path().join("repo")), &Config::default())
            .expect("open");
        let store = Arc::new(Offering {
            inner: src.clone(),
            known: HashMap::from([(tree_digest, Arc::new(offer))]),
            reads: AtomicUsize::new(0),
        });
        let signed = SignedImage::new(&img.manifest, None);
        let first = rt
            .block_on(reg.push(store.clone(), &signed))
            .expect("first push");
        assert_eq!(first.blobs_total as usize, img.closure.len(), "{what}");
        assert_eq!(first.blobs_uploaded as usize, img.closure.len(), "{what}");

        // The same layers again: nothing to upload, the tree is not read.
        store.reads.store(0, Ordering::SeqCst);
        let mut again = img.manifest.clone();
        again.annotations.insert("org.example.n".into(), "2".into());
        let rep = rt
            .block_on(reg.push(store.clone(), &SignedImage::new(&again, None)))
            .expect("re-push");
        assert_eq!(rep.blobs_uploaded, 0, "{what}");
        assert_eq!(rep.blobs_total as usize, img.closure.len(), "{what}");
        assert_eq!(store.reads.load(Ordering::SeqCst), 0, "{what}: tree read");

        // What was pushed pulls back whole, and the packs are framed as
        // a push that parsed the tree frames them.
        let out = Arc::new(MemoryStore::new());
        rt.block_on(reg.pull(out.clone())).expect("pull");
        for d in &img.closure {
            assert_eq!(out.get(d).expect("pulled"), src.get(d).expect("source"));
        }
        let plain_dir = tempfile::tempdir().expect("tempdir");
        let plain_root = plain_dir.path().join("repo");
        let plain =
            pf_registry_file::open(&file_ref(&plain_root), &Config::default()).expect("open");
        rt.block_on(plain.push(src.clone(), &signed))
            .expect("plain push");
        for p in &tree.packs {
            let key = pf_registry_core::layout::blob(&p.blob);
            assert_eq!(
                std::fs::read(dir.path().join("repo").join(&key)).expect("offered"),
                std::fs::read(plain_root.join(&key)).expect("plain"),
                "{what}: pack {} encoded alike",
                p.blob.short()
            );
        }
    }
}
