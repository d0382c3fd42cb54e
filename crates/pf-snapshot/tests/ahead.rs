//! A push to a file:// repository whose snapshot encoded its new packs
//! ahead: every new pack is offered prepared, the push stores exactly those
//! encodings (their spool files become the repository's blobs), and the
//! image pulls back byte for byte, into a restore and into a local store
//! (which then holds every blob intact), whether its packs are named by
//! their chunks (the default) or by their content (as pf named them before).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use pf_cas::BlobStore;
use pf_registry_core::codec::Prepared;
use pf_registry_core::manifest::FsTree;
use pf_registry_core::{Config, DirStore, ImageRef, Registry, SignedImage};
use pf_snapshot::{restore, Chunking, PackNames, SnapshotOptions};

/// Every regular file under `root`, relative, with its bytes.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn packs_named_by_their_chunks_encoded_ahead_are_what_the_push_stores() {
    push_ahead_and_pull_back(PackNames::Chunks);
}

#[test]
fn packs_named_by_content_encoded_ahead_are_what_the_push_stores() {
    push_ahead_and_pull_back(PackNames::Content);
}

fn push_ahead_and_pull_back(names: PackNames) {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    for i in 0..60u64 {
        let p = world.join(format!("d{}/f{i:02}", i % 4));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pf_testsupport::noise(500 + i as usize * 300, i)).unwrap();
    }
    fs::write(world.join("big"), pf_testsupport::noise(400 << 10, 77)).unwrap();
    fs::write(world.join("zeros"), vec![0u8; 64 << 10]).unwrap();

    let repo = ImageRef::parse(&format!("file://{}", tmp.path().join("repo").display())).unwrap();
    let reg = pf_registry_file::open(&repo, &Config::default()).unwrap();
    let store = Arc::new(DirStore::open(tmp.path().join("store")).unwrap());
    let mut opts = SnapshotOptions::new("t", "1");
    opts.chunking = Chunking {
        cdc_min: 4 << 10,
        cdc_avg: 8 << 10,
        cdc_max: 16 << 10,
        pack_size: 40 << 10,
    };
    opts.encode_ahead = reg.encode_ahead();
    opts.pack_names = names;
    assert!(
        opts.encode_ahead.is_some(),
        "a file:// destination encodes ahead"
    );
    let snap = pf_snapshot::snapshot(&world, store.clone(), &opts).unwrap();
    let tree = FsTree::from_bytes(&store.get(&snap.manifest.layers[0].digest).unwrap()).unwrap();
    assert!(tree.packs.len() >= 10, "{} packs", tree.packs.len());
    let named = pf_registry_core::pack::chunk_named(&tree);
    match names {
        PackNames::Chunks => assert_eq!(named.len(), tree.packs.len()),
        _ => assert!(named.is_empty()),
    }

    // Every pack is prepared, with its chunk lengths in offset order.
    let mut spools = Vec::new();
    for (k, pack) in tree.packs.iter().enumerate() {
        let mut plan: Vec<(u64, u64)> = tree
            .chunk_table
            .iter()
            .filter(|c| c.pack as usize == k)
            .map(|c| (c.offset, c.size))
            .collect();
        plan.sort();
        let plan: Vec<u64> = plan.into_iter().map(|c| c.1).collect();
        let blob = Prepared::lookup(&*snap.source, &pack.blob, &plan)
            .unwrap_or_else(|| panic!("pack {k} has no prepared encoding"));
        assert!(Prepared::lookup(&*snap.source, &pack.blob, &plan[1..]).is_none());
        let spool = blob.spool_path().unwrap().to_path_buf();
        assert_eq!(fs::metadata(&spool).unwrap().nlink(), 1);
        spools.push(spool);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(reg.push(snap.source.clone(), &SignedImage::new(&snap.manifest, None)))
        .unwrap();
    // The push linked each prepared spool file into the repository rather
    // than encoding the pack again.
    for s in &spools {
        assert_eq!(fs::metadata(s).unwrap().nlink(), 2, "{}", s.display());
    }
    let snap_manifest = snap.manifest.clone();
    drop(snap);
    for s in &spools {
        assert!(
            !s.exists(),
            "spool file {} outlived the snapshot",
            s.display()
        );
    }

    let out = tmp.path().join("out");
    let local = Arc::new(DirStore::open(tmp.path().join("pulled")).unwrap());
    rt.block_on(restore::pull_into_dir(
        &reg,
        local,
        &out,
        &restore::RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(files(&out), files(&world));

    // Pulled into a local store: every blob is there under its name,
    // intact by its naming; a second pull fetches nothing.
    let kept = Arc::new(DirStore::open(tmp.path().join("kept")).unwrap());
    let first = rt.block_on(reg.pull(kept.clone())).unwrap();
    assert!(first.blobs_fetched >= tree.packs.len() as u64);
    for p in &tree.packs {
        let mut check =
            pf_registry_core::pack::PackCheck::new(named.get(&p.blob).map(Vec::as_slice));
        assert!(kept
            .has_intact_as(&p.blob, Some(p.size), &mut check)
            .unwrap());
    }
    let again = rt.block_on(reg.pull(kept.clone())).unwrap();
    assert_eq!(again.blobs_fetched, 0);
    let out2 = tmp.path().join("out2");
    restore::restore_from_store(&snap_manifest, &*kept, &out2, &Default::default()).unwrap();
    assert_eq!(files(&out2), files(&world));
}
