use std::sync::Arc;

use pf_cas::MemoryStore;
use pf_registry_core::pack::PackCheck;
use pf_snapshot::{restore, snapshot, Chunking, SnapshotOptions};

use super::*;
use crate::keys::Identity;

struct World {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    plain: Arc<MemoryStore>,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("world");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/token.txt"), "TOKEN=sk-live-abcdef").unwrap();
    let big: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("model.bin"), big).unwrap();
    World {
        _tmp: tmp,
        dir,
        plain: Arc::new(MemoryStore::new()),
    }
}

fn opts(base: Option<FsTree>) -> SnapshotOptions {
    let mut o = SnapshotOptions::new("secret-agent", "9");
    o.chunking = Chunking {
        cdc_min: 4096,
        cdc_avg: 16384,
        cdc_max: 65536,
        pack_size: 100_000,
    };
    o.base = base;
    // Packs named by content: `open_image` stores them in plain (packs
    // named by their chunks stay sealed; the tests that want those say so).
    o.pack_names = pf_snapshot::PackNames::Content;
    o
}

/// Seals `snap` for `to` under `key` against `base`, into `out`.
fn seal(
    snap: &pf_snapshot::Snapshot,
    key: &DataKey,
    to: &Identity,
    base: &[PackSeal],
    out: &dyn BlobStore,
) -> SealedImage {
    seal_image(
        &snap.manifest,
        &*snap.source,
        key,
        &[to.recipient()],
        base,
        3,
        out,
    )
    .unwrap()
}

/// Copies the outer closure of `m` from `from` into a fresh store.
fn outer_only(m: &Manifest, from: &dyn BlobStore) -> MemoryStore {
    let s = MemoryStore::new();
    for l in &m.layers {
        s.put(&from.get(&l.digest).unwrap()).unwrap();
    }
    s
}

#[test]
fn an_image_seals_opens_and_restores_byte_for_byte_and_dedups_across_versions() {
    let w = world();
    let id = Identity::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let snap = snapshot(&w.dir, w.plain.clone(), &opts(None)).unwrap();
    let out = MemoryStore::new();
    let sealed = seal(&snap, &key, &id, &[], &out);
    let m = &sealed.manifest;
    assert!(is_encrypted(m));
    assert_eq!(m.agent.name, "pf-crypt");
    assert_eq!(m.created_at, OUTER_CREATED_AT);
    assert!(m.annotations.is_empty() && m.parents.is_empty());
    assert!(m.layers.len() >= 4, "{} layers", m.layers.len());
    // The outer image holds no plaintext digest.
    let tree = pf_snapshot::restore::manifest_tree(&snap.manifest, &*w.plain).unwrap();
    let text = String::from_utf8(m.to_bytes()).unwrap();
    for p in &tree.packs {
        assert!(!text.contains(&p.blob.hex()));
    }
    assert!(!text.contains(&snap.manifest.layers[0].digest.hex()));

    let store = outer_only(m, &out);
    // Over the caller's total, nothing is opened.
    assert!(matches!(
        open_image(m, &store, Some(&id), 1000),
        Err(CryptError::Malformed(_))
    ));
    let inner = open_image(m, &store, Some(&id), u64::MAX).unwrap();
    assert_eq!(inner, snap.manifest);
    let dest = w._tmp.path().join("restored");
    restore::restore_from_store(&inner, &store, &dest, &restore::RestoreOptions::default())
        .unwrap();
    for f in ["secrets/token.txt", "model.bin"] {
        assert_eq!(
            std::fs::read(dest.join(f)).unwrap(),
            std::fs::read(w.dir.join(f)).unwrap()
        );
    }

    // The next version, chunked against the first and sealed against its
    // seals, shares every unchanged sealed pack and seals only new ones.
    std::fs::write(w.dir.join("secrets/new.txt"), "another secret").unwrap();
    assert!(covers(&sealed.packs, &tree));
    let snap2 = snapshot(&w.dir, w.plain.clone(), &opts(Some(tree))).unwrap();
    let out2 = MemoryStore::new();
    let sealed2 = seal(&snap2, &key, &id, &sealed.packs, &out2);
    let old: HashSet<Digest> = m.layers.iter().map(|l| l.digest).collect();
    let new_data: Vec<_> = sealed2
        .manifest
        .layers
        .iter()
        .filter(|l| l.role == DATA_ROLE && !old.contains(&l.digest))
        .collect();
    assert_eq!(
        new_data.len(),
        1,
        "one new sealed pack for one new small file"
    );
    // Sealing the same plaintext again gives the same sealed packs.
    let again = seal(&snap, &key, &id, &[], &MemoryStore::new());
    assert_eq!(again.packs, sealed.packs);
}

#[test]
fn a_wrong_or_missing_identity_names_the_recipients_and_tampering_fails() {
    let w = world();
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let snap = snapshot(&w.dir, w.plain.clone(), &opts(None)).unwrap();
    let out = MemoryStore::new();
    let key = DataKey::generate().unwrap();
    let m = seal(&snap, &key, &a, &[], &out).manifest;
    let store = outer_only(&m, &out);
    match open_image(&m, &store, Some(&b), u64::MAX) {
        Err(e @ CryptError::WrongIdentity { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&a.key_id().to_string()), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    match open_image(&m, &store, None, u64::MAX) {
        Err(CryptError::NeedIdentity(ids)) => assert_eq!(ids, vec![a.key_id()]),
        other => panic!("{other:?}"),
    }
    // A sealed index altered (and renamed, as a writer of an unsigned
    // repository could) fails authentication; nothing plaintext is stored.
    let before = store.list().unwrap().len();
    let mut bad = m.clone();
    let idx = bad
        .layers
        .iter_mut()
        .find(|l| l.role == INDEX_ROLE)
        .unwrap();
    let mut bytes = store.get(&idx.digest).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    idx.digest = store.put(&bytes).unwrap();
    assert!(matches!(
        open_image(&bad, &store, Some(&a), u64::MAX),
        Err(CryptError::Authentication)
    ));
    // A sealed pack altered and renamed is refused: the sealed index
    // names every sealed pack.
    let mut bad = m.clone();
    let data = bad.layers.iter_mut().find(|l| l.role == DATA_ROLE).unwrap();
    let mut bytes = store.get(&data.digest).unwrap();
    bytes[40] ^= 1;
    data.digest = store.put(&bytes).unwrap();
    assert!(open_image(&bad, &store, Some(&a), u64::MAX).is_err());
    assert_eq!(
        store.list().unwrap().len(),
        before + 2,
        "only the two tampered blobs were added"
    );
}

#[test]
fn an_image_sealed_in_another_encryption_format_is_refused_by_name() {
    let w = world();
    let a = Identity::generate().unwrap();
    let snap = snapshot(&w.dir, w.plain.clone(), &opts(None)).unwrap();
    let out = MemoryStore::new();
    let m = seal(&snap, &DataKey::generate().unwrap(), &a, &[], &out).manifest;
    let store = outer_only(&m, &out);
    assert!(open_image(&m, &store, Some(&a), u64::MAX).is_ok());
    for (media_type, says) in [
        (super::ENVELOPE_MEDIA_TYPE_V1, "format v1"),
        (
            "application/vnd.processfork.crypt.envelope.v9+json",
            "newer pf",
        ),
    ] {
        let mut old = m.clone();
        let env = old
            .layers
            .iter_mut()
            .find(|l| l.role == super::ENVELOPE_ROLE)
            .unwrap();
        env.media_type = media_type.into();
        match open_image(&old, &store, Some(&a), u64::MAX) {
            Err(e @ CryptError::Malformed(_)) => {
                assert!(e.to_string().contains(says), "{e}")
            }
            other => panic!("{media_type}: {other:?}"),
        }
    }
}

#[test]
fn the_opened_view_restores_from_sealed_packs_and_refuses_a_tampered_one() {
    let w = world();
    let id = Identity::generate().unwrap();
    let snap = snapshot(&w.dir, w.plain.clone(), &opts(None)).unwrap();
    let out = MemoryStore::new();
    let key = DataKey::generate().unwrap();
    let m = seal(&snap, &key, &id, &[], &out).manifest;
    let store = Arc::new(outer_only(&m, &out));
    let sealed_count = store.list().unwrap().len();
    let opened = open_index(&m, store.clone(), Some(&id), u64::MAX).unwrap();
    assert_eq!(opened.manifest, snap.manifest);
    let dest = w._tmp.path().join("restored");
    restore::restore_from_store(
        &opened.manifest,
        &*opened.store,
        &dest,
        &restore::RestoreOptions::default(),
    )
    .unwrap();
    for f in ["secrets/token.txt", "model.bin"] {
        assert_eq!(
            std::fs::read(dest.join(f)).unwrap(),
            std::fs::read(w.dir.join(f)).unwrap()
        );
    }
    // Only the plaintext fs tree was written: packs are opened as read.
    assert_eq!(store.list().unwrap().len(), sealed_count + 1);
    for s in opened.store.seals() {
        assert!(opened
            .store
            .has_intact(&s.plain, Some(s.plain_size))
            .unwrap());
        assert!(!store.has(&s.plain).unwrap());
    }

    // A sealed pack altered in place (a damaged local copy under its own
    // name): reading it fails authentication, and nothing is restored.
    let s = opened.store.seals().next().unwrap().clone();
    let mut bytes = store.get(&s.sealed).unwrap();
    bytes[50] ^= 1;
    let bad = Arc::new(MemoryStore::new());
    for d in store.list().unwrap() {
        if d != s.sealed {
            bad.put(&store.get(&d).unwrap()).unwrap();
        }
    }
    let bad = Arc::new(Swapped {
        inner: bad,
        digest: s.sealed,
        bytes,
    });
    let view = open_index(&m, bad.clone(), Some(&id), u64::MAX).unwrap();
    let err = view.store.get(&s.plain).unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");
    assert!(matches!(
        open_image(&m, &*bad, Some(&id), u64::MAX),
        Err(CryptError::Authentication)
    ));
    assert!(!bad.has(&s.plain).unwrap(), "no plaintext stored");
}

/// A store that serves `bytes` under `digest` (a copy damaged in place).
struct Swapped {
    inner: Arc<MemoryStore>,
    digest: Digest,
    bytes: Vec<u8>,
}

impl BlobStore for Swapped {
    fn has(&self, d: &Digest) -> pf_cas::Result<bool> {
        Ok(*d == self.digest || self.inner.has(d)?)
    }
    fn size(&self, d: &Digest) -> pf_cas::Result<Option<u64>> {
        if *d == self.digest {
            return Ok(Some(self.bytes.len() as u64));
        }
        self.inner.size(d)
    }
    fn open(&self, d: &Digest) -> pf_cas::Result<Box<dyn std::io::Read + Send>> {
        if *d == self.digest {
            return Ok(Box::new(std::io::Cursor::new(self.bytes.clone())));
        }
        self.inner.open(d)
    }
    fn put(&self, b: &[u8]) -> pf_cas::Result<Digest> {
        self.inner.put(b)
    }
    fn put_stream(
        &self,
        e: Option<&Digest>,
        r: &mut dyn std::io::Read,
    ) -> pf_cas::Result<(Digest, u64)> {
        self.inner.put_stream(e, r)
    }
    fn list(&self) -> pf_cas::Result<Vec<Digest>> {
        self.inner.list()
    }
}

/// [`world`] with compressible text and `noise` bytes of incompressible
/// data added, an identity and a data key.
fn mixed_world(noise: usize) -> (World, Identity, DataKey) {
    let w = world();
    std::fs::write(w.dir.join("log.txt"), "tool call ok; ".repeat(20_000)).unwrap();
    let bytes = pf_testsupport::noise(noise, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(w.dir.join("kv.bin"), bytes).unwrap();
    (
        w,
        Identity::generate().unwrap(),
        DataKey::generate().unwrap(),
    )
}

#[test]
fn a_push_source_serves_the_same_sealed_packs_sealed_again_or_held() {
    // Compressible text beside the incompressible model: some packs are
    // held (compressed), the model's are sealed again when read.
    let (w, id, key) = mixed_world(300_000);
    let snap = snapshot(&w.dir, w.plain.clone(), &opts(None)).unwrap();
    let reference = seal(&snap, &key, &id, &[], &MemoryStore::new());
    for budget in [0, u64::MAX] {
        let spill = Arc::new(MemoryStore::new());
        let (sealed, push) = seal_for_push(
            &snap.manifest,
            snap.source.clone(),
            &key,
            &[id.recipient()],
            &[],
            3,
            spill.clone(),
            budget,
            None,
        )
        .unwrap();
        assert_eq!(sealed.packs, reference.packs, "the same sealed packs");
        let mut resealed = 0;
        for l in &sealed.manifest.layers {
            let (mut r, vouched) = push.open_vouched(&l.digest).unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut bytes).unwrap();
            assert_eq!(Digest::of(&bytes), l.digest, "{}", l.role);
            assert_eq!(push.size(&l.digest).unwrap(), Some(l.size));
            if !spill.has(&l.digest).unwrap() && vouched {
                resealed += 1;
            }
        }
        assert!(
            resealed >= 1,
            "budget {budget}: some pack sealed again or held"
        );
        // Nothing sealed was written to the local store but what is over
        // the budget; persist writes the plaintext index through.
        if budget == u64::MAX {
            assert!(spill.list().unwrap().is_empty());
        }
        push.persist(&sealed.index).unwrap();
        assert!(spill.has(&sealed.index).unwrap());
    }
}

#[test]
fn sealed_packs_are_encoded_ahead_into_the_destination_spool() {
    use pf_registry_core::codec::{EncodeAhead, Prepared, IN_MEMORY_LIMIT};
    let (w, id, key) = mixed_world(5 << 20);
    // Packs of 1.5 MiB: most are spooled, the last ones are small.
    let mut o = opts(None);
    o.chunking.pack_size = 3 << 19;
    let snap = snapshot(&w.dir, w.plain.clone(), &o).unwrap();
    let reference = seal(&snap, &key, &id, &[], &MemoryStore::new());
    let tmp = tempfile::tempdir().unwrap();
    let repo =
        pf_registry_core::ImageRef::parse(&format!("file://{}", tmp.path().join("repo").display()))
            .unwrap();
    let reg = pf_registry_file::open(&repo, &pf_registry_core::Config::default()).unwrap();
    let ahead: Option<EncodeAhead> = pf_registry_core::Registry::encode_ahead(&reg);
    assert!(ahead.is_some(), "a file:// destination encodes ahead");
    let spill = Arc::new(MemoryStore::new());
    let (sealed, push) = seal_for_push(
        &snap.manifest,
        snap.source.clone(),
        &key,
        &[id.recipient()],
        &[],
        3,
        spill.clone(),
        u64::MAX,
        ahead,
    )
    .unwrap();
    assert_eq!(sealed.packs, reference.packs, "the same sealed packs");
    let data: Vec<_> = sealed
        .manifest
        .layers
        .iter()
        .filter(|l| l.role == DATA_ROLE)
        .collect();
    assert!(data.iter().any(|l| l.size <= IN_MEMORY_LIMIT));
    let (small, data): (Vec<_>, Vec<_>) = data.into_iter().partition(|l| l.size <= IN_MEMORY_LIMIT);
    assert!(data.len() >= 3, "{} sealed packs over 1 MiB", data.len());
    // A small one is served as without a spool (held or sealed again).
    for l in small {
        assert!(Prepared::lookup(&*push, &l.digest, &[]).is_none());
    }
    let mut spools = Vec::new();
    for l in &data {
        // Offered encoded, as a blob the push encodes whole: its encoding
        // decodes to the sealed pack the manifest names.
        let enc = Prepared::lookup(&*push, &l.digest, &[]).expect("encoded ahead");
        assert!(Prepared::lookup(&*push, &l.digest, &[1]).is_none());
        assert_eq!(enc.raw_size, l.size);
        let raw = zstd::decode_all(&enc.read_all().unwrap()[..]).unwrap();
        assert_eq!(Digest::of(&raw), l.digest);
        // Read after all, it is sealed again, the same bytes.
        let (mut r, _) = push.open_vouched(&l.digest).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut bytes).unwrap();
        assert_eq!(bytes, raw);
        spools.push(enc.spool_path().expect("spooled").to_path_buf());
    }
    // Nothing sealed was held or written to the local store.
    assert!(spill.list().unwrap().is_empty());
    // The push links each spool file into the repository (it does not
    // encode the pack again), and the image opens back.
    use std::os::unix::fs::MetadataExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source: Arc<dyn BlobStore> = push.clone();
    rt.block_on(pf_registry_core::Registry::push(
        &reg,
        source,
        &pf_registry_core::SignedImage::new(&sealed.manifest, None),
    ))
    .unwrap();
    for s in &spools {
        assert_eq!(std::fs::metadata(s).unwrap().nlink(), 2, "{}", s.display());
    }
    let pulled = Arc::new(MemoryStore::new());
    rt.block_on(pf_registry_core::Registry::pull(&reg, pulled.clone()))
        .unwrap();
    let opened = open_image(&sealed.manifest, &*pulled, Some(&id), u64::MAX);
    assert!(opened.is_ok(), "{:?}", opened.err());
}

/// `snap.source`, with the bytes of pack `pack` served altered (one bit
/// flipped) and vouched for or not.
struct Altered {
    inner: Arc<pf_snapshot::SourceStore>,
    pack: Digest,
    vouch: bool,
}

impl BlobStore for Altered {
    fn open(&self, d: &Digest) -> pf_cas::Result<Box<dyn std::io::Read + Send>> {
        Ok(self.open_vouched(d)?.0)
    }
    fn open_vouched(&self, d: &Digest) -> pf_cas::Result<(Box<dyn std::io::Read + Send>, bool)> {
        if *d != self.pack {
            return self.inner.open_vouched(d);
        }
        let mut bytes = self.inner.get(d)?;
        bytes[7] ^= 1;
        Ok((Box::new(std::io::Cursor::new(bytes)), self.vouch))
    }
    pf_cas::forward_to!(inner: has, size, put, put_stream, list);
}

#[test]
fn packs_named_by_their_chunks_seal_open_and_restore_and_bad_chunks_are_caught() {
    let w = world();
    let id = Identity::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let mut o = opts(None);
    o.pack_names = pf_snapshot::PackNames::Chunks;
    let snap = snapshot(&w.dir, w.plain.clone(), &o).unwrap();
    let tree = restore::manifest_tree(&snap.manifest, &*w.plain).unwrap();
    let named = pf_registry_core::pack::chunk_named(&tree);
    assert!(tree.packs.len() >= 2);
    assert_eq!(
        named.len(),
        tree.packs.len(),
        "every new pack named by its chunks"
    );
    let out = MemoryStore::new();
    let sealed = seal(&snap, &key, &id, &[], &out);
    let m = &sealed.manifest;
    assert_eq!(
        m.layers
            .iter()
            .find(|l| l.role == ENVELOPE_ROLE)
            .unwrap()
            .media_type,
        ENVELOPE_MEDIA_TYPE
    );
    // Opened whole: checked chunk by chunk, and stored under its name.
    let whole = outer_only(m, &out);
    assert_eq!(
        open_image(m, &whole, Some(&id), u64::MAX).unwrap(),
        snap.manifest
    );
    for p in &tree.packs {
        assert!(whole
            .has_intact_as(
                &p.blob,
                Some(p.size),
                &mut PackCheck::new(named.get(&p.blob).map(Vec::as_slice))
            )
            .unwrap());
    }
    let dest = w._tmp.path().join("restored-whole");
    restore::restore_from_store(&snap.manifest, &whole, &dest, &Default::default()).unwrap();
    assert_eq!(
        std::fs::read(dest.join("model.bin")).unwrap(),
        std::fs::read(w.dir.join("model.bin")).unwrap()
    );
    // The view restores and cats, each pack checked by its chunks.
    let store = Arc::new(outer_only(m, &out));
    let opened = open_index(m, store.clone(), Some(&id), u64::MAX).unwrap();
    let dest = w._tmp.path().join("restored");
    restore::restore_from_store(&opened.manifest, &*opened.store, &dest, &Default::default())
        .unwrap();
    for f in ["secrets/token.txt", "model.bin"] {
        assert_eq!(
            std::fs::read(dest.join(f)).unwrap(),
            std::fs::read(w.dir.join(f)).unwrap()
        );
    }
    let mut cat = Vec::new();
    pf_snapshot::cat_from_store(&tree, &*opened.store, "secrets/token.txt", &mut cat).unwrap();
    assert_eq!(cat, b"TOKEN=sk-live-abcdef");

    // A source whose bytes changed under one pack: unvouched, the seal
    // refuses the chunk; vouched (a lying store), the image seals, and
    // opening, restoring and cat all refuse the pack.
    let model = tree.entries.iter().find(|e| e.path == "model.bin").unwrap();
    let pack = tree.packs[tree.chunk_table[model.parts[0] as usize].pack as usize].blob;
    let altered = |vouch, out: &MemoryStore| {
        let src = Altered {
            inner: snap.source.clone(),
            pack,
            vouch,
        };
        seal_image(&snap.manifest, &src, &key, &[id.recipient()], &[], 3, out)
    };
    let err = altered(false, &out).unwrap_err();
    assert!(err.to_string().contains("chunk 0 of pack"), "{err}");
    let bad_out = MemoryStore::new();
    let bad = altered(true, &bad_out).unwrap().manifest;
    let bad_store = Arc::new(outer_only(&bad, &bad_out));
    let err = open_image(&bad, &*bad_store, Some(&id), u64::MAX).unwrap_err();
    assert!(
        err.to_string().contains(&format!("decrypted pack {pack}")),
        "{err}"
    );
    let view = open_index(&bad, bad_store.clone(), Some(&id), u64::MAX).unwrap();
    let dest = w._tmp.path().join("refused");
    assert!(
        restore::restore_from_store(&view.manifest, &*view.store, &dest, &Default::default())
            .is_err()
    );
    let mut cat = Vec::new();
    assert!(pf_snapshot::cat_from_store(&tree, &*view.store, "model.bin", &mut cat).is_err());
    assert!(cat.is_empty(), "no byte of a bad pack is written");

    // The next version against this one: base packs it uses in part are
    // listed whole, so they are still checked by their chunks.
    std::fs::write(w.dir.join("secrets/token.txt"), "TOKEN=sk-live-rotated").unwrap();
    let mut model = std::fs::read(w.dir.join("model.bin")).unwrap();
    model[230_000..230_100].fill(0);
    std::fs::write(w.dir.join("model.bin"), &model).unwrap();
    let mut o2 = o.clone();
    o2.base = Some(tree.clone());
    let snap2 = snapshot(&w.dir, w.plain.clone(), &o2).unwrap();
    let tree2 = restore::manifest_tree(&snap2.manifest, &*w.plain).unwrap();
    // (chunks of the pack the entries use, chunks of it the table lists)
    let listed = |t: &FsTree, p: &pf_registry_core::manifest::Chunk| {
        let i = t.packs.iter().position(|q| q == p).unwrap() as u32;
        let used: HashSet<u32> = t
            .entries
            .iter()
            .flat_map(|e| e.parts.iter().copied())
            .filter(|&k| t.chunk_table[k as usize].pack == i)
            .collect();
        let all = t.chunk_table.iter().filter(|c| c.pack == i).count();
        (used.len(), all)
    };
    assert!(
        tree2
            .packs
            .iter()
            .filter(|p| tree.packs.contains(p))
            .any(|p| listed(&tree2, p).0 < listed(&tree, p).1),
        "a base pack is used in part"
    );
    assert_eq!(
        pf_registry_core::pack::chunk_named(&tree2).len(),
        tree2.packs.len()
    );
    let out2 = MemoryStore::new();
    let m2 = seal(&snap2, &key, &id, &sealed.packs, &out2).manifest;
    let store2 = Arc::new(MemoryStore::new());
    for l in &m2.layers {
        let b = out2.get(&l.digest).or_else(|_| out.get(&l.digest)).unwrap();
        store2.put(&b).unwrap();
    }
    let opened2 = open_index(&m2, store2.clone(), Some(&id), u64::MAX).unwrap();
    let dest2 = w._tmp.path().join("restored2");
    restore::restore_from_store(
        &opened2.manifest,
        &*opened2.store,
        &dest2,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dest2.join("secrets/token.txt")).unwrap(),
        b"TOKEN=sk-live-rotated"
    );
    assert_eq!(
        std::fs::read(dest2.join("model.bin")).unwrap(),
        std::fs::read(w.dir.join("model.bin")).unwrap()
    );
    assert!(open_image(&m2, &*store2, Some(&id), u64::MAX).is_ok());
}
