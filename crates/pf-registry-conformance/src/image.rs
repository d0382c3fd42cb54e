//! Test images: deterministic and proptest-generated snapshots with layers,
//! an fs tree (some files chunked, small ones packed) and a KV page manifest.

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_digest::Digest;
use pf_registry_core::manifest::{
    AgentInfo, FsTree, KvPage, KvPages, BLOB_MEDIA_TYPE, FS_LAYER_ROLE, FS_TREE_V2_MEDIA_TYPE,
    KV_PAGES_MEDIA_TYPE,
};
use pf_registry_core::{Descriptor, Manifest};
use pf_snapshot::{Chunking, SourceStore, StatCache};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use rand::{RngExt, SeedableRng};

/// The default [`ImageSpec::pack_max`]: small files are packed into
/// shared pack blobs, as `pf` packs them (the image is built by pf-snapshot).
pub const PACKED_MAX: usize = 1000;

/// The content of a test image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Opaque top-level layers.
    pub layers: Vec<Vec<u8>>,
    /// Files of the fs tree (path, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// KV pages (k, v).
    pub kv: Vec<(Vec<u8>, Vec<u8>)>,
    /// Files longer than this are split into chunks of about this size
    /// (FastCDC).
    pub chunk_size: usize,
    /// New chunks are grouped into packs of about this many bytes; 0 gives
    /// every chunk its own pack.
    pub pack_max: usize,
}

/// A built image: its manifest and every closure digest.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The manifest.
    pub manifest: Manifest,
    /// Unique closure digests.
    pub closure: Vec<Digest>,
}

impl ImageSpec {
    /// A deterministic image with `n` files, layers and pages derived from `seed`.
    pub fn sample(seed: u64, n: usize) -> ImageSpec {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut bytes = |len: usize| -> Vec<u8> { (0..len).map(|_| rng.random()).collect() };
        ImageSpec {
            layers: (0..2)
                .map(|i| bytes(1000 + i * 3000 + seed as usize))
                .collect(),
            files: (0..n)
                .map(|i| (format!("dir{}/file{i}.bin", i % 3), bytes(100 + i * 700)))
                .collect(),
            kv: (0..n.min(3))
                .map(|i| (bytes(512 + i), bytes(256 + i)))
                .collect(),
            chunk_size: 1024,
            pack_max: PACKED_MAX,
        }
    }

    /// The chunking that gives [`ImageSpec::chunk_size`] and
    /// [`ImageSpec::pack_max`] their meaning (FastCDC around `chunk_size`).
    pub fn chunking(&self) -> Chunking {
        let c = self.chunk_size.clamp(256, 4 << 20) as u32;
        Chunking {
            cdc_min: (c / 4).clamp(64, 1 << 20),
            cdc_avg: c,
            cdc_max: (c * 2).clamp(1024, 16 << 20),
            pack_size: self.pack_max.max(1) as u64,
        }
    }

    /// Writes the files into a temporary directory and snapshots it with
    /// pf-snapshot (as `pf push` does); every blob goes into `store`.
    fn snapshot_files(&self, store: &dyn BlobStore, base: Option<&FsTree>) -> FsTree {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir for a test image");
        for (path, data) in &self.files {
            let p = dir.path().join(path);
            let parent = p.parent().expect("file path has a parent");
            std::fs::create_dir_all(parent).expect("create test image dir");
            std::fs::write(&p, data).expect("write test image file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
                .expect("chmod test image file");
        }
        let mut dirs = vec![dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("list test image dir") {
                let p = e.expect("list test image dir").path();
                if p.is_dir() {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                        .expect("chmod test image dir");
                    dirs.push(p);
                }
            }
        }
        let source = SourceStore::new(Arc::new(MemoryStore::new()));
        let tree = pf_snapshot::snapshot_dir(
            dir.path(),
            &source,
            &mut StatCache::default(),
            self.chunking(),
            base,
            &mut |w| panic!("test image: {w}"),
        )
        .expect("snapshot a test image");
        // Packs named by their chunks are stored under that name, checked
        // chunk by chunk.
        let tilings = pf_registry_core::pack::chunk_named(&tree);
        for d in source.list().expect("list snapshot blobs") {
            pf_registry_core::pack::copy_blob(&source, store, &d, &tilings)
                .expect("test store put");
        }
        tree
    }

    /// Stores every blob in `store` and builds the manifest.
    pub fn build(&self, store: &dyn BlobStore, name: &str) -> TestImage {
        self.build_on(store, name, None)
    }

    /// [`ImageSpec::build`], chunking the files against `base` (the fs tree
    /// of an image already pushed): chunks it holds are referenced in its
    /// packs, which `store` does not get.
    pub fn build_on(&self, store: &dyn BlobStore, name: &str, base: Option<&FsTree>) -> TestImage {
        let put = |b: &[u8]| store.put(b).expect("test store put");
        let mut manifest = Manifest::new(
            AgentInfo {
                name: name.into(),
                version: "test".into(),
            },
            "2026-11-23T00:00:00Z",
        );
        for (i, l) in self.layers.iter().enumerate() {
            manifest.layers.push(Descriptor {
                role: if i == 0 {
                    "model.base".into()
                } else {
                    format!("model.diff.{i}")
                },
                media_type: BLOB_MEDIA_TYPE.into(),
                digest: put(l),
                size: l.len() as u64,
            });
        }
        let tree_bytes = self.snapshot_files(store, base).to_bytes();
        manifest.layers.push(Descriptor {
            role: FS_LAYER_ROLE.into(),
            media_type: FS_TREE_V2_MEDIA_TYPE.into(),
            digest: put(&tree_bytes),
            size: tree_bytes.len() as u64,
        });
        if !self.kv.is_empty() {
            let pages = KvPages {
                pages: self
                    .kv
                    .iter()
                    .enumerate()
                    .map(|(i, (k, v))| KvPage {
                        layer: 0,
                        page: i as u64,
                        k: put(k),
                        v: put(v),
                    })
                    .collect(),
            };
            let pb = pages.to_bytes();
            manifest.layers.push(Descriptor {
                role: "cache.manifest".into(),
                media_type: KV_PAGES_MEDIA_TYPE.into(),
                digest: put(&pb),
                size: pb.len() as u64,
            });
        }
        let closure = pf_registry_core::manifest::closure(&manifest, |d| Ok(store.get(&d.digest)?))
            .expect("closure of a test image")
            .into_iter()
            .map(|b| b.digest)
            .collect();
        TestImage { manifest, closure }
    }
}

fn arb_spec() -> impl Strategy<Value = ImageSpec> {
    let blob = |max: usize| proptest::collection::vec(any::<u8>(), 0..max);
    (
        proptest::collection::vec(blob(5000), 1..4),
        proptest::collection::btree_map("[a-z]{1,6}(/[a-z0-9_.-]{1,8}){0,2}", blob(4000), 0..8),
        proptest::collection::vec((blob(700), blob(700)), 0..4),
        prop_oneof![Just(512usize), Just(2048usize), Just(1 << 20)],
    )
        .prop_map(|(layers, files, kv, chunk_size)| {
            // Keep paths a directory can hold: no `.`/`..` components, and
            // none that is a prefix directory of another file.
            let files: Vec<(String, Vec<u8>)> = files
                .into_iter()
                .filter(|(p, _)| p.split('/').all(|c| c != "." && c != ".."))
                .collect();
            let paths: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
            let files = files
                .into_iter()
                .filter(|(p, _)| !paths.iter().any(|q| q.starts_with(&format!("{p}/"))))
                .collect();
            ImageSpec {
                layers,
                files,
                kv,
                chunk_size,
                pack_max: PACKED_MAX,
            }
        })
}

/// `cases` proptest-generated image specs, deterministic for `seed`.
pub fn generated_specs(cases: u32, seed: u64) -> Vec<ImageSpec> {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PtConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strat = arb_spec();
    (0..cases)
        .map(|_| {
            strat
                .new_tree(&mut runner)
                .map(|t| proptest::strategy::ValueTree::current(&t))
                .expect("generate spec")
        })
        .collect()
}
