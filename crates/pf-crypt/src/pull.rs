//! Pulling an encrypted image into a directory ([`pull_into_dir`]) the way
//! a plain pull restores (pf-snapshot's `restore::pull_into_dir`): each
//! sealed pack is opened as it arrives and its plaintext written straight
//! into place; nothing sealed or plaintext is stored but the key envelope,
//! the sealed index and the fs trees.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use pf_cas::{BlobStore, CasError};
use pf_digest::Digest;
use pf_registry_core::{Manifest, PullReport, PullTarget, Registry, RegistryError};
use pf_snapshot::restore::{RestoreOptions, RestoreTarget};

use crate::browse::pull_only;
use crate::image::{open_index_with, OpenedStore, PackSeal};
use crate::image::{AuthFailed, PackReader};
use crate::keys::Identity;
use crate::Result;

/// Restores the encrypted image `registry` serves into `dest` (new or
/// empty) with the first of `identities` it was sealed for: its envelope
/// and sealed index first (then the inner image's size is checked against
/// `options.max_size`), then every sealed pack not already in `store`,
/// each opened piece by piece as it arrives (every piece authenticated,
/// the plaintext checked against its digest as it is written). Sealed packs already in `store` are read from
/// there. A failed restore removes what it created. A plain image is
/// restored as pf-snapshot's `pull_into_dir` does. Returns the pull of
/// the outer image and the bytes restored.
pub async fn pull_into_dir(
    registry: &dyn Registry,
    store: Arc<dyn BlobStore>,
    dest: &Path,
    options: &RestoreOptions,
    identities: &[Identity],
) -> Result<(PullReport, u64)> {
    let first = pull_only(registry, &store, Default::default()).await?;
    if !crate::is_encrypted(&first.manifest) {
        let r = pf_snapshot::restore::pull_into_dir(registry, store, dest, options).await?;
        return Ok((r.pull, r.restored_bytes));
    }
    let opened = open_index_with(&first.manifest, store.clone(), identities, options.max_size)?;
    let target = Decrypting {
        restore: RestoreTarget::new(dest, options.clone()),
        inner: opened.manifest,
        view: opened.store.clone(),
        by_sealed: opened
            .store
            .seals()
            .map(|s| (s.sealed, s.clone()))
            .collect(),
    };
    let pulled = registry.pull_into(store.clone(), &target).await;
    let pulled = match pulled {
        Ok(p) if p.manifest_digest != first.manifest_digest => Err(RegistryError::invalid(
            "reference",
            "it moved to another image while it was pulled",
        )),
        other => other,
    };
    let view = opened.store;
    let finished = match (&pulled, target.restore.layout()) {
        (Ok(_), Some(layout)) => tokio::task::spawn_blocking(move || layout.finish(&*view))
            .await
            .unwrap_or_else(|e| {
                Err(RegistryError::io(
                    "restore",
                    io::Error::other(format!("restore task failed: {e}")),
                ))
            }),
        _ => Ok(0),
    };
    if pulled.is_err() || finished.is_err() {
        if let Some(layout) = target.restore.layout() {
            layout.abandon();
        }
    }
    Ok((pulled?, finished?))
}

/// The pull target: the restore's, laid out from the inner image, behind a
/// store that opens sealed packs into it.
struct Decrypting {
    restore: RestoreTarget,
    inner: Manifest,
    view: Arc<OpenedStore>,
    by_sealed: HashMap<Digest, PackSeal>,
}

impl PullTarget for Decrypting {
    fn data_store(
        &self,
        _outer: &Manifest,
        store: &Arc<dyn BlobStore>,
    ) -> pf_registry_core::Result<Arc<dyn BlobStore>> {
        let sink = self.restore.data_store(&self.inner, store)?;
        Ok(Arc::new(Opening {
            sink,
            view: self.view.clone(),
            by_sealed: self.by_sealed.clone(),
        }))
    }

    /// Sealed packs filling the same file are spread apart, as a plain
    /// restore spreads their plaintext ([`Layout::spread`]).
    ///
    /// [`Layout::spread`]: pf_snapshot::restore::Layout::spread
    fn order(&self, blobs: &mut Vec<pf_registry_core::manifest::ClosureBlob>) {
        if let Some(l) = self.restore.layout() {
            l.spread(blobs, |b| {
                self.by_sealed.get(&b.digest).map_or(b.digest, |s| s.plain)
            });
        }
    }
}

/// Sealed packs go opened into `sink` (the restore), other blobs to the
/// caller's store.
struct Opening {
    sink: Arc<dyn BlobStore>,
    view: Arc<OpenedStore>,
    by_sealed: HashMap<Digest, PackSeal>,
}

impl BlobStore for Opening {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        self.has_intact(digest, None)
    }
    /// A sealed pack already local is not fetched (the restore's finish
    /// opens it from there); else it is wanted if the restore wants its
    /// plaintext.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        let inner = self.view.inner();
        match self.by_sealed.get(digest) {
            Some(s) => Ok(inner.has_intact(digest, size)?
                || self.sink.has_intact(&s.plain, Some(s.plain_size))?),
            None => inner.has_intact(digest, size),
        }
    }
    fn size(&self, digest: &Digest) -> pf_cas::Result<Option<u64>> {
        self.view.inner().size(digest)
    }
    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        self.view.inner().open(digest)
    }
    fn put(&self, bytes: &[u8]) -> pf_cas::Result<Digest> {
        let d = Digest::of(bytes);
        if self.by_sealed.contains_key(&d) {
            return Ok(self.put_stream(Some(&d), &mut &bytes[..])?.0);
        }
        self.view.inner().put(bytes)
    }
    fn put_stream_as(
        &self,
        name: &Digest,
        namer: &mut dyn pf_cas::Namer,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<u64> {
        self.view.inner().put_stream_as(name, namer, reader)
    }
    fn put_stream(
        &self,
        expected: Option<&Digest>,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<(Digest, u64)> {
        let Some(s) = expected.and_then(|d| self.by_sealed.get(d)) else {
            return self.view.inner().put_stream(expected, reader);
        };
        // The sealed bytes are not hashed: every piece is authenticated
        // and the plaintext is checked against its digest as the restore
        // writes it, so a blob that is not the one named fails one or the
        // other (bad data, exit 4), and nothing sealed is stored.
        let mut pr = PackReader::new(
            Counting {
                inner: reader,
                n: 0,
            },
            self.view.sealer().clone(),
            s.pieces.clone(),
        );
        self.sink.put_stream(Some(&s.plain), &mut pr)?;
        if pr.sealed.n != s.sealed_size {
            return Err(CasError::Io {
                context: format!("reading sealed pack {}", s.sealed),
                source: io::Error::other(AuthFailed),
            });
        }
        Ok((s.sealed, pr.sealed.n))
    }
    fn list(&self) -> pf_cas::Result<Vec<Digest>> {
        self.view.inner().list()
    }
    fn get_named(&self, name: &str) -> pf_cas::Result<Option<Vec<u8>>> {
        self.view.inner().get_named(name)
    }
    fn put_named(&self, name: &str, value: &[u8]) -> pf_cas::Result<bool> {
        self.view.inner().put_named(name, value)
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}
