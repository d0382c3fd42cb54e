//! The one push/pull engine, written once over any [`Transport`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use pf_cas::BlobStore;
use pf_digest::Digest;
use pf_sign::{SignError, SignatureEnvelope};

use crate::codec;
use crate::config::Config;
use crate::error::{RegistryError, Result};
use crate::manifest::{
    self, ClosureBlob, Descriptor, Manifest, MAX_INDEX_BYTES, MAX_MANIFEST_BYTES,
};
use crate::offline;
use crate::pack;
use crate::pack::chunks;
use crate::progress::ProgressEvent;
use crate::registry::{
    ChunkRead, Inspection, PullReport, PullTarget, PushReport, Registry, SignedImage,
};
use crate::transport::{
    CommitBlob, CommitRequest, FetchedManifest, LocalManifests, Transport, UploadedBlob,
};

/// What a push knows of its v2 packs: their frame plans (see
/// [`pack::frame_plans`]) and, for packs named by their chunks, their
/// tilings (see [`pack::chunk_named`]).
#[derive(Default)]
struct Plans {
    frames: std::collections::HashMap<Digest, Vec<u64>>,
    tilings: pack::Tilings,
}

/// A push's v2 trees, and their [`Plans`] once a blob is to be uploaded
/// (finding the packs named by their chunks hashes every chunk list; a
/// re-push that uploads nothing never does).
struct LazyPlans {
    /// Trees parsed or offered (see [`manifest::KnownIndex`]) by the closure walk.
    trees: Vec<Arc<manifest::FsTree>>,
    /// Fs trees whose children were offered without the tree: read from
    /// `store` only when plans are needed.
    unread: Vec<Descriptor>,
    store: Arc<dyn BlobStore>,
    plans: std::sync::OnceLock<Plans>,
}

impl LazyPlans {
    /// The plans of every tree (made on the first call).
    fn get(&self) -> Result<&Plans> {
        if let Some(p) = self.plans.get() {
            return Ok(p);
        }
        let mut plans = Plans::default();
        let mut add = |tree: &manifest::FsTree| {
            if tree.is_v2() {
                plans.frames.extend(pack::frame_plans(tree));
                plans.tilings.extend(pack::chunk_named(tree));
            }
        };
        self.trees.iter().for_each(|t| add(t));
        for d in &self.unread {
            let bytes = read_index(&*self.store, d)?;
            manifest::index_children_visiting(&d.media_type, &bytes, &mut add)?;
        }
        Ok(self.plans.get_or_init(|| plans))
    }
}

/// The children of index blob `d` if `store` offers them (see
/// [`manifest::KnownIndex`]); an offered v2 tree goes to `trees`, a tree
/// offered by its children only to `unread`.
fn known_children(
    store: &dyn BlobStore,
    d: &Descriptor,
    trees: &mut Vec<Arc<manifest::FsTree>>,
    unread: &mut Vec<Descriptor>,
) -> Option<Vec<ClosureBlob>> {
    let known = store
        .prepared(&d.digest)?
        .downcast::<manifest::KnownIndex>()
        .ok()?;
    match &*known {
        manifest::KnownIndex::Tree(t) => {
            trees.push(t.clone());
            Some(manifest::tree_children(t))
        }
        manifest::KnownIndex::Children(c) => {
            unread.push(d.clone());
            Some(c.clone())
        }
    }
}

/// Implements [`Registry`] for any [`Transport`]: closure walk, dedup,
/// parallel encode, commit-last, verify-before-parse, capped decode.
pub struct Engine<T: Transport> {
    transport: Arc<T>,
    config: Config,
    pin: Option<Digest>,
}

impl<T: Transport> Engine<T> {
    /// Wraps `transport`; `pin` is the reference's `@sha256:` digest, if any.
    pub fn new(transport: T, config: Config, pin: Option<Digest>) -> Self {
        Engine {
            transport: Arc::new(transport),
            config,
            pin,
        }
    }

    /// The underlying transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    fn concurrency(&self) -> usize {
        self.config.concurrency.max(1)
    }

    /// What barred the network, if the transport is offline (see [`offline`]).
    fn offline_switch(&self) -> Option<String> {
        self.transport.local_manifests().and_then(|l| l.offline)
    }

    /// Fetches the manifest (offline: reads it from `store`, see
    /// [`offline`]) and verifies it.
    async fn fetch_manifest_verified(
        &self,
        store: Option<&Arc<dyn BlobStore>>,
    ) -> Result<(FetchedManifest, pf_sign::Verification, Manifest)> {
        let local = self.transport.local_manifests();
        let fetched = match (local, store) {
            (
                Some(LocalManifests {
                    offline: Some(switch),
                    revision,
                    ..
                }),
                Some(store),
            ) => {
                let (st, pin, loc) = (store.clone(), self.pin, self.transport.location());
                blocking(move || offline::load(&*st, pin, revision.as_deref(), &switch, &loc))
                    .await?
            }
            _ => {
                let t = self.transport.clone();
                self.config
                    .retry
                    .run("fetch manifest", &*self.config.progress, || {
                        t.get_manifest()
                    })
                    .await?
            }
        };
        if fetched.manifest.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::invalid(
                "manifest",
                format!(
                    "{} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit",
                    fetched.manifest.len()
                ),
            ));
        }
        // Verify the signature over the exact bytes BEFORE parsing them.
        let verification = self
            .config
            .trust
            .verify(&fetched.manifest, fetched.signature.as_deref())?;
        let digest = Digest::of(&fetched.manifest);
        if let Some(pin) = self.pin {
            if !fetched.pin_verified && pin != digest {
                return Err(RegistryError::Integrity {
                    what: format!("manifest at {} (pinned digest)", self.transport.location()),
                    expected: pin,
                    actual: digest,
                });
            }
        }
        let manifest = Manifest::from_bytes(&fetched.manifest)?;
        self.config
            .progress
            .on_event(&ProgressEvent::Manifest { digest });
        Ok((fetched, verification, manifest))
    }

    /// Fetches `blobs` into `store`, `concurrency` at a time. Returns (wire, raw) bytes.
    /// Packs named by their chunks (in `tilings`) are checked chunk by chunk.
    async fn fetch_blobs(
        &self,
        store: &Arc<dyn BlobStore>,
        blobs: Vec<ClosureBlob>,
        budget: &Arc<AtomicU64>,
        tilings: &Arc<pack::Tilings>,
    ) -> Result<(u64, u64)> {
        let wire = Arc::new(AtomicU64::new(0));
        let raw = Arc::new(AtomicU64::new(0));
        futures::stream::iter(blobs)
            .map(|b| {
                let wire = wire.clone();
                let raw = raw.clone();
                async move {
                    let what = format!("fetch blob {}", b.digest.short());
                    let (w, r) = self
                        .config
                        .retry
                        .run(&what, &*self.config.progress, || {
                            self.fetch_one(store.clone(), b, budget.clone(), tilings.clone())
                        })
                        .await?;
                    wire.fetch_add(w, Ordering::Relaxed);
                    raw.fetch_add(r, Ordering::Relaxed);
                    self.config.progress.on_event(&ProgressEvent::BlobDone {
                        digest: b.digest,
                        raw_bytes: r,
                        wire_bytes: w,
                    });
                    Ok::<_, RegistryError>(())
                }
            })
            .buffer_unordered(self.concurrency())
            .try_collect::<()>()
            .await?;
        Ok((wire.load(Ordering::Relaxed), raw.load(Ordering::Relaxed)))
    }

    async fn fetch_one(
        &self,
        store: Arc<dyn BlobStore>,
        b: ClosureBlob,
        budget: Arc<AtomicU64>,
        tilings: Arc<pack::Tilings>,
    ) -> Result<(u64, u64)> {
        let stream = self.transport.get_blob(&b.digest).await?;
        let counter = Arc::new(AtomicU64::new(0));
        let c2 = counter.clone();
        let stream = stream.map(move |r| match r {
            Ok(bytes) => {
                c2.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => Err(e.into_io()),
        });
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let cap = self.config.max_blob_size;
        let raw = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(256 * 1024, reader);
            codec::decode_pack_into(
                reader,
                &b.digest,
                b.size,
                cap,
                Some(budget),
                tilings.get(&b.digest).map(Vec::as_slice),
                &*store,
            )
        })
        .await
        .map_err(|e| RegistryError::io("decode task", std::io::Error::other(e.to_string())))??;
        Ok((counter.load(Ordering::Relaxed), raw))
    }

    /// Encodes and uploads `blobs` from `store`, `concurrency` at a time.
    async fn upload(
        &self,
        store: &Arc<dyn BlobStore>,
        blobs: Vec<ClosureBlob>,
        plans: &Arc<LazyPlans>,
    ) -> Result<Vec<UploadedBlob>> {
        let to_upload = blobs;
        // Bounded concurrency (memory = concurrency x buffer).
        let level = self.config.zstd_level;
        let spool = self
            .transport
            .spool_dir()
            .or_else(|| self.config.spool_dir.clone());
        let hash_encoded = self.transport.wants_encoded_digest();
        futures::stream::iter(to_upload)
            .map(|b| {
                let store = store.clone();
                let spool = spool.clone();
                let plans = plans.clone();
                async move {
                    let enc = blocking(move || match plans.get()?.frames.get(&b.digest) {
                        Some(plan) => match codec::Prepared::lookup(&*store, &b.digest, plan) {
                            Some(enc) => Ok(enc),
                            None => codec::encode_pack(
                                &*store,
                                &b.digest,
                                plan,
                                plans.get()?.tilings.get(&b.digest).map(Vec::as_slice),
                                level,
                                spool.as_deref(),
                                hash_encoded,
                            ),
                        },
                        None => match codec::Prepared::lookup(&*store, &b.digest, &[]) {
                            Some(enc) => Ok(enc),
                            None => codec::encode(
                                &*store,
                                &b.digest,
                                level,
                                spool.as_deref(),
                                hash_encoded,
                            ),
                        },
                    })
                    .await?;
                    let what = format!("upload blob {}", b.digest.short());
                    let t = self.transport.clone();
                    let up = self
                        .config
                        .retry
                        .run(&what, &*self.config.progress, || t.put_blob(&enc))
                        .await?;
                    self.config.progress.on_event(&ProgressEvent::BlobDone {
                        digest: b.digest,
                        raw_bytes: enc.raw_size,
                        wire_bytes: enc.encoded_size,
                    });
                    Ok::<_, RegistryError>(up)
                }
            })
            .buffer_unordered(self.concurrency())
            .try_collect()
            .await
    }

    /// Push steps after the closure walk: dedup, upload, commit.
    async fn push_closure(
        &self,
        store: &Arc<dyn BlobStore>,
        image: &SignedImage,
        closure: &[ClosureBlob],
        plans: &Arc<LazyPlans>,
        absent: &HashSet<Digest>,
        guard: Option<&crate::lifecycle::PushGuard>,
    ) -> Result<PushReport> {
        let manifest_digest = image.digest();
        // 2. dedup against the backend.
        let missing: HashSet<Digest> = self
            .missing(closure.iter().map(|b| b.digest).collect())
            .await?
            .into_iter()
            .collect();
        if let Some(d) = missing.iter().find(|d| absent.contains(d)) {
            return Err(RegistryError::not_found(format!(
                "blob {d} (referenced by the manifest) in the local store or at {}",
                self.transport.location()
            )));
        }
        let to_upload: Vec<ClosureBlob> = closure
            .iter()
            .filter(|b| missing.contains(&b.digest))
            .copied()
            .collect();
        self.config.progress.on_event(&ProgressEvent::Plan {
            op: "push",
            blobs: to_upload.len() as u64,
            bytes: to_upload.iter().filter_map(|b| b.size).sum(),
        });

        let mut uploaded = self.upload(store, to_upload, plans).await?;

        // 4. commit: signature and manifest last.
        let mut again = 0;
        let resolved = loop {
            let mut by_digest: std::collections::HashMap<Digest, UploadedBlob> =
                uploaded.iter().map(|u| (u.digest, u.clone())).collect();
            let commit_blobs: Vec<CommitBlob> = closure
                .iter()
                .map(|b| CommitBlob {
                    digest: b.digest,
                    raw_size: b.size,
                    uploaded: by_digest.remove(&b.digest),
                })
                .collect();
            let t = self.transport.clone();
            let res = self
                .config
                .retry
                .run("commit manifest", &*self.config.progress, || {
                    t.commit(CommitRequest {
                        manifest: &image.manifest,
                        manifest_digest,
                        signature: image.signature.as_deref(),
                        blobs: &commit_blobs,
                    })
                })
                .await;
            match res {
                Ok(r) => break r,
                // A blob dedup found went away before the commit (a gc
                // that started before this push's marker): wait until the
                // gcs the marker may have missed are done (no later gc
                // deletes a blob the marker names), then upload what is
                // missing now and commit again.
                Err(RegistryError::NotFound { .. }) if again < 3 => {
                    again += 1;
                    if let Some(g) = guard {
                        if let Err(e) = g.wait_for_gcs(&*self.transport).await {
                            tracing::warn!(
                                "cannot read gc records at {}: {e}",
                                self.transport.location()
                            );
                        }
                    }
                    let gone: HashSet<Digest> = self
                        .missing(closure.iter().map(|b| b.digest).collect())
                        .await?
                        .into_iter()
                        .collect();
                    let blobs = closure
                        .iter()
                        .filter(|b| gone.contains(&b.digest))
                        .copied()
                        .collect();
                    uploaded.extend(self.upload(store, blobs, plans).await?);
                }
                Err(e) => return Err(e),
            }
        };
        self.config.progress.on_event(&ProgressEvent::Manifest {
            digest: manifest_digest,
        });

        Ok(PushReport {
            manifest_digest,
            resolved,
            blobs_total: closure.len() as u64,
            blobs_uploaded: uploaded.len() as u64,
            raw_bytes_uploaded: {
                let sizes: std::collections::HashMap<Digest, u64> = closure
                    .iter()
                    .filter_map(|b| b.size.map(|s| (b.digest, s)))
                    .collect();
                uploaded
                    .iter()
                    .map(|u| sizes.get(&u.digest).copied().unwrap_or(0))
                    .sum()
            },
            wire_bytes_uploaded: uploaded.iter().map(|u| u.encoded_size).sum(),
            signed: image.signature.is_some(),
        })
    }

    async fn missing(&self, digests: Vec<Digest>) -> Result<Vec<Digest>> {
        let batch = self.transport.max_batch().max(1);
        let mut out = Vec::new();
        for chunk in digests.chunks(batch) {
            let t = self.transport.clone();
            let m = self
                .config
                .retry
                .run("query missing blobs", &*self.config.progress, || {
                    t.missing(chunk)
                })
                .await?;
            // Never trust a backend to answer only about what was asked.
            let asked: HashSet<&Digest> = chunk.iter().collect();
            out.extend(m.into_iter().filter(|d| asked.contains(d)));
        }
        Ok(out)
    }
}

/// Reads an index blob from a local store, bounded.
fn read_index(store: &dyn BlobStore, d: &Descriptor) -> Result<Vec<u8>> {
    match store.size(&d.digest)? {
        None => Err(RegistryError::not_found(format!(
            "index blob {} in the local store",
            d.digest
        ))),
        Some(n) if n > MAX_INDEX_BYTES => Err(RegistryError::invalid(
            format!("index blob {}", d.digest),
            format!("{n} bytes exceeds the limit {MAX_INDEX_BYTES}"),
        )),
        Some(_) => Ok(store.get(&d.digest)?),
    }
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::io("worker task", std::io::Error::other(e.to_string())))?
}

#[async_trait]
impl<T: Transport> Registry for Engine<T> {
    fn location(&self) -> String {
        self.transport.location()
    }

    async fn push(&self, store: Arc<dyn BlobStore>, image: &SignedImage) -> Result<PushReport> {
        let manifest = Manifest::from_bytes(&image.manifest)?;
        let manifest_digest = image.digest();
        if let Some(pin) = self.pin {
            if pin != manifest_digest {
                return Err(RegistryError::Integrity {
                    what: "pushing to a digest-pinned reference".into(),
                    expected: pin,
                    actual: manifest_digest,
                });
            }
        }
        if let Some(sig) = &image.signature {
            let env = SignatureEnvelope::from_json_bytes(sig)?;
            if env.manifest_digest != manifest_digest {
                return Err(RegistryError::Signature(SignError::DigestMismatch {
                    envelope: env.manifest_digest,
                    actual: manifest_digest,
                }));
            }
        }

        // 1. closure, from the local store, with the frame plan of every v2
        //    pack. A blob the local store lacks (a pack of the version this
        //    one was chunked against) must already be at the backend.
        let st = store.clone();
        let (closure, plans, absent) = blocking(move || {
            let (mut offered, mut unread, mut parsed) = (Vec::new(), Vec::new(), Vec::new());
            let c = manifest::closure_known(
                &manifest,
                |d| known_children(&*st, d, &mut offered, &mut unread),
                |d| read_index(&*st, d),
                |tree| {
                    if tree.is_v2() {
                        parsed.push(Arc::new(tree.clone()));
                    }
                },
            )?;
            offered.extend(parsed);
            let plans = LazyPlans {
                trees: offered,
                unread,
                store: st.clone(),
                plans: std::sync::OnceLock::new(),
            };
            let mut absent = HashSet::new();
            for b in &c {
                if !st.has(&b.digest)? {
                    absent.insert(b.digest);
                }
            }
            Ok((c, plans, absent))
        })
        .await?;
        let plans = Arc::new(plans);

        // 2. announce the push (a marker gc respects; see `crate::lifecycle`),
        //    then dedup, upload and commit; settle before removing the marker.
        let all: Vec<Digest> = closure.iter().map(|b| b.digest).collect();
        let t: &dyn Transport = &*self.transport;
        let guard = crate::lifecycle::PushGuard::begin(t, &all).await?;
        let res = self
            .push_closure(&store, image, &closure, &plans, &absent, guard.as_ref())
            .await;
        match (res, guard) {
            (Ok(report), Some(g)) => {
                // Wait out any gc that may have missed the marker, then put
                // back whatever it removed.
                let check = match g.wait_for_gcs(t).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("cannot read gc records at {}: {e}", t.location());
                        true
                    }
                };
                let gone: HashSet<Digest> = if check {
                    self.missing(all).await?.into_iter().collect()
                } else {
                    HashSet::new()
                };
                if !gone.is_empty() {
                    let again: Vec<ClosureBlob> = closure
                        .iter()
                        .filter(|b| gone.contains(&b.digest))
                        .copied()
                        .collect();
                    self.upload(&store, again, &plans).await?;
                }
                // The marker names only blobs the committed manifest now
                // references: one left behind (no delete permission) is
                // harmless and expires.
                if let Err(e) = g.release(t).await {
                    tracing::warn!("cannot remove push marker at {}: {e}", t.location());
                }
                Ok(report)
            }
            (Err(e), Some(g)) => {
                // Best effort: an orphaned marker only delays gc until it expires.
                let _ = g.release(t).await;
                Err(e)
            }
            (res, None) => res,
        }
    }

    async fn pull_into(
        &self,
        store: Arc<dyn BlobStore>,
        target: &dyn PullTarget,
    ) -> Result<PullReport> {
        let (fetched, verification, manifest) = self.fetch_manifest_verified(Some(&store)).await?;
        let manifest_digest = Digest::of(&fetched.manifest);
        let offline = self.offline_switch();
        let location = self.transport.location();

        // Phase 1: the index layers (fs trees, KV page lists). Other layers
        // are data like the index children: phase 2 fetches them through
        // the target's store, which may not need them (a partial restore).
        let layers: Vec<ClosureBlob> = {
            let mut out = Vec::new();
            let mut idx = std::collections::HashMap::new();
            manifest::merge_unique(
                &mut out,
                &mut idx,
                manifest
                    .layers
                    .iter()
                    .filter(|l| manifest::is_index_media_type(&l.media_type))
                    .map(|l| ClosureBlob {
                        digest: l.digest,
                        size: Some(l.size),
                    }),
            )?;
            out
        };
        let st = store.clone();
        let (need1, layers) = blocking(move || {
            let mut need = Vec::new();
            // A local copy is trusted only if intact (see
            // `BlobStore::has_intact`); a damaged one is fetched again.
            for b in &layers {
                if !st.has_intact(&b.digest, b.size)? {
                    need.push(*b);
                }
            }
            Ok((need, layers))
        })
        .await?;
        if let (Some(switch), false) = (&offline, need1.is_empty()) {
            return Err(offline::missing(&need1, switch, &location));
        }
        self.config.progress.on_event(&ProgressEvent::Plan {
            op: "pull",
            blobs: need1.len() as u64,
            bytes: need1.iter().filter_map(|b| b.size).sum(),
        });
        let mut fetched_count = need1.len() as u64;
        // Blobs with no declared size (KV pages) share one decoded-bytes budget.
        let budget = Arc::new(AtomicU64::new(self.config.max_undeclared_total));
        let none = Arc::new(pack::Tilings::new());
        let (mut wire, mut raw) = self.fetch_blobs(&store, need1, &budget, &none).await?;

        // Phase 2: expand index blobs (now local) and fetch their children
        // into the store the target picks.
        // The target may do blocking work (a restore creates its files):
        // tell a multi-threaded runtime so other tasks move off this worker.
        let pick = || target.data_store(&manifest, &store);
        let data = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(pick)?,
            _ => pick()?,
        };
        let st = store.clone();
        let dt = data.clone();
        let m2 = manifest.clone();
        let (closure, need2, tilings) = blocking(move || {
            use rayon::prelude::*;
            let mut tilings = pack::Tilings::new();
            let closure = manifest::closure_visiting(
                &m2,
                |d| read_index(&*st, d),
                |tree| tilings.extend(pack::chunk_named(tree)),
            )?;
            let top: HashSet<Digest> = layers.iter().map(|b| b.digest).collect();
            // Checking a local copy re-hashes it: one blob per core.
            let intact: Vec<bool> = closure
                .par_iter()
                .map(|b| {
                    if top.contains(&b.digest) {
                        return Ok(true);
                    }
                    Ok(match tilings.get(&b.digest) {
                        Some(t) => {
                            dt.has_intact_as(&b.digest, b.size, &mut pack::PackCheck::new(Some(t)))?
                        }
                        None => dt.has_intact(&b.digest, b.size)?,
                    })
                })
                .collect::<Result<_>>()?;
            let need: Vec<ClosureBlob> = closure
                .iter()
                .zip(intact)
                .filter(|(_, ok)| !ok)
                .map(|(b, _)| *b)
                .collect();
            Ok((closure, need, Arc::new(tilings)))
        })
        .await?;
        if let (Some(switch), false) = (&offline, need2.is_empty()) {
            return Err(offline::missing(&need2, switch, &location));
        }
        self.config.progress.on_event(&ProgressEvent::PlanGrew {
            blobs: need2.len() as u64,
            bytes: need2.iter().filter_map(|b| b.size).sum(),
        });
        fetched_count += need2.len() as u64;
        let mut need2 = need2;
        target.order(&mut need2);
        let (w2, r2) = self.fetch_blobs(&data, need2, &budget, &tilings).await?;
        wire += w2;
        raw += r2;

        // Keep the manifest for a later offline pull (best effort: the
        // pull itself succeeded).
        if let Some(LocalManifests {
            offline: None,
            revision,
            ..
        }) = self.transport.local_manifests()
        {
            let (st, f) = (store.clone(), fetched.clone());
            let kept = blocking(move || offline::record(&*st, &f, revision.as_deref())).await;
            if let Err(e) = kept {
                tracing::warn!("cannot keep the manifest of {location} for offline pulls: {e}");
            }
        }

        Ok(PullReport {
            manifest,
            manifest_digest,
            manifest_bytes: fetched.manifest,
            signature_bytes: fetched.signature,
            verification,
            blobs_total: closure.len() as u64,
            blobs_fetched: fetched_count,
            blobs_present: closure.len() as u64 - fetched_count,
            wire_bytes_fetched: wire,
            raw_bytes_fetched: raw,
        })
    }

    async fn read_chunks(
        &self,
        pack: &Digest,
        pack_size: u64,
        pieces: &[manifest::Piece],
    ) -> Result<ChunkRead> {
        chunks::read(&*self.transport, &self.config, pack, pack_size, pieces).await
    }

    async fn inspect(&self) -> Result<Inspection> {
        let (fetched, verification, manifest) = self.fetch_manifest_verified(None).await?;
        Ok(Inspection {
            manifest,
            manifest_digest: Digest::of(&fetched.manifest),
            verification,
            manifest_size: fetched.manifest.len() as u64,
        })
    }

    async fn exists(&self) -> Result<bool> {
        let t = self.transport.clone();
        self.config
            .retry
            .run("exists", &*self.config.progress, || t.exists())
            .await
    }

    fn encode_ahead(&self) -> Option<codec::EncodeAhead> {
        Some(codec::EncodeAhead::new(
            self.config.zstd_level,
            self.transport.spool_dir()?,
            self.transport.wants_encoded_digest(),
        ))
    }
}
