//! Content-addressed blob storage: the [`BlobStore`] trait, an in-memory
//! [`MemoryStore`] and an on-disk [`DirStore`].
//!
//! Every write is verified: a blob is stored under the digest of its bytes,
//! and a streamed write with an expected digest stores nothing on mismatch.
//!
//! ```
//! use pf_cas::{BlobStore, Digest, DirStore, MemoryStore};
//! # fn main() -> Result<(), pf_cas::CasError> {
//! let mem = MemoryStore::new();
//! let d = mem.put(b"blob")?;
//! assert_eq!(d, Digest::of(b"blob"));
//! assert_eq!(mem.get(&d)?, b"blob");
//!
//! let dir = tempfile::tempdir().expect("tempdir");
//! let disk = DirStore::open(dir.path())?;
//! // A streamed write with the wrong expected digest stores nothing.
//! let wrong = Digest::of(b"other");
//! assert!(disk.put_stream(Some(&wrong), &mut &b"blob"[..]).is_err());
//! assert!(!disk.has(&wrong)? && !disk.has(&d)?);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use pf_digest::Digest;

mod forward;
use pf_digest::Hasher;

/// Errors from a blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CasError {
    /// The blob is not in the store.
    #[error("blob {0} not found in local store")]
    NotFound(Digest),
    /// Content did not hash to the expected digest.
    #[error("integrity error: expected {expected}, got {actual}")]
    Integrity {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes seen.
        actual: Digest,
    },
    /// The store cannot do this (see [`BlobStore::put_stream_as`]).
    #[error("not supported by this store: {0}")]
    NotSupported(String),
    /// Underlying I/O failure (including errors from the reader passed in).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, CasError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> CasError {
    let context = context.into();
    move |source| CasError::Io { context, source }
}

/// How a blob's bytes give its name, fed as they stream by. A store names
/// a blob by the SHA-256 of its bytes ([`Sha256`]) unless its caller passes
/// another namer: a layer above may name a blob by its parts (a pack named
/// by its chunks, each checked by its own SHA-256), and the store then
/// checks that name just as strictly.
pub trait Namer: Send {
    /// Feeds the next bytes.
    fn update(&mut self, bytes: &[u8]);
    /// The name of the bytes fed so far; the namer then starts afresh.
    fn finish(&mut self) -> Digest;
}

/// The SHA-256 of the bytes: the name of every blob not named otherwise.
#[derive(Default)]
pub struct Sha256(Hasher);

impl Namer for Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&mut self) -> Digest {
        std::mem::take(&mut self.0).finish()
    }
}

/// Content-addressed blob storage, shared across threads as `Arc<dyn BlobStore>`.
pub trait BlobStore: Send + Sync + 'static {
    /// Whether the blob is present.
    fn has(&self, digest: &Digest) -> Result<bool>;
    /// The blob's size, or `None` if absent.
    fn size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Opens the blob for streaming reads; [`CasError::NotFound`] if absent.
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;
    /// Reads the whole blob into memory.
    fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut r = self.open(digest)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(io_err(format!("reading blob {digest}")))?;
        Ok(v)
    }
    /// Stores `bytes` under their digest (idempotent) and returns it.
    fn put(&self, bytes: &[u8]) -> Result<Digest>;
    /// Streams `reader` into the store, hashing as it goes. If `expected` is
    /// given and the content hashes differently, nothing is stored and
    /// [`CasError::Integrity`] is returned. Read errors leave nothing behind.
    /// Returns the digest and byte count.
    fn put_stream(&self, expected: Option<&Digest>, reader: &mut dyn Read)
        -> Result<(Digest, u64)>;
    /// [`put_stream`](Self::put_stream) of a blob named `name` by `namer`
    /// rather than by the SHA-256 of its bytes: the bytes are stored under
    /// `name` only if `namer` gives them that name (else nothing is stored
    /// and [`CasError::Integrity`] is returned). Returns the byte count. The
    /// default refuses with [`CasError::NotSupported`].
    fn put_stream_as(
        &self,
        name: &Digest,
        namer: &mut dyn Namer,
        reader: &mut dyn Read,
    ) -> Result<u64> {
        let _ = (namer, reader);
        Err(CasError::NotSupported(format!(
            "storing blob {name}, named other than by the SHA-256 of its bytes"
        )))
    }
    /// Every digest in the store, sorted.
    fn list(&self) -> Result<Vec<Digest>>;
    /// Opens the blob like [`BlobStore::open`], also saying whether the
    /// store vouches for its content so a reader may skip re-hashing it.
    /// A store answers `true` only if it verified exactly these bytes itself
    /// and the returned reader fails rather than yield bytes that changed
    /// since. The default never vouches.
    fn open_vouched(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, bool)> {
        Ok((self.open(digest)?, false))
    }
    /// A form of blob `digest` that a layer above this crate made while
    /// the blob was recorded, for that layer to use instead of reading
    /// the blob again (a snapshot keeps each new pack's wire encoding
    /// here for the push). Opaque to the store; `None` by default.
    fn prepared(&self, digest: &Digest) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let _ = digest;
        None
    }
    /// Whether the blob is present and intact, asked by a caller about to
    /// rely on a copy it did not just write (a pull deciding what it need
    /// not fetch). `size` is the size the referrer declares, if any.
    ///
    /// The default is cheap: present and, when `size` is given, of that
    /// size; it suits stores whose readers verify what they read. A store
    /// whose copies can be damaged behind its back ([`DirStore`]: a power
    /// loss, a shared disk) re-hashes the copy and removes it if damaged, so
    /// it can be stored again.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> Result<bool> {
        present_with_size(self.size(digest)?, size)
    }
    /// [`has_intact`](Self::has_intact) of a blob named by `namer` (see
    /// [`put_stream_as`](Self::put_stream_as)): a store that re-hashes its
    /// copies checks this one with `namer`. The default is the cheap check
    /// of [`has_intact`](Self::has_intact)'s default.
    fn has_intact_as(
        &self,
        digest: &Digest,
        size: Option<u64>,
        namer: &mut dyn Namer,
    ) -> Result<bool> {
        let _ = namer;
        present_with_size(self.size(digest)?, size)
    }
    /// The value stored under `name` by [`put_named`](Self::put_named),
    /// `None` if unset or the store keeps no named values (the default).
    fn get_named(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let _ = name;
        Ok(None)
    }
    /// Stores a small `value` under `name` (any string), replacing it.
    /// Named values live beside the blobs, not among them ([`list`](Self::list)
    /// never shows them): a pull keeps the manifest of a pinned reference
    /// there for a later offline pull. Returns `false` if the store keeps
    /// no named values (the default).
    fn put_named(&self, name: &str, value: &[u8]) -> Result<bool> {
        let _ = (name, value);
        Ok(false)
    }
}

/// The cheap intactness check: present (`stored` is its size) and, when
/// `declared` is given, of that size.
fn present_with_size(stored: Option<u64>, declared: Option<u64>) -> Result<bool> {
    Ok(stored.is_some_and(|n| declared.is_none_or(|d| d == n)))
}

fn check(expected: Option<&Digest>, actual: Digest) -> Result<()> {
    match expected {
        Some(e) if *e != actual => Err(CasError::Integrity {
            expected: *e,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Copies `r` into `w` while `namer` names the bytes; returns the name and
/// the length. Errors say whether the source (`reading blob stream`) or
/// the store (`writing blob`) failed.
fn copy_naming(
    r: &mut dyn Read,
    w: &mut dyn Write,
    namer: &mut dyn Namer,
) -> Result<(Digest, u64)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading blob stream")(e)),
        };
        namer.update(&buf[..n]);
        total += n as u64;
        w.write_all(&buf[..n]).map_err(io_err("writing blob"))?;
    }
    Ok((namer.finish(), total))
}

/// fsyncs a directory so a rename or new entry in it is durable (no-op where
/// directories cannot be opened, i.e. not on unix).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!("fsync {}", dir.display())))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Temp files in a [`DirStore`] untouched for this long were left by a
/// writer that was killed (a live one keeps writing, and every failure it
/// sees removes its temp file); [`DirStore::open`] removes them.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes regular files in `dir` older than [`STALE_TEMP_AGE`]. Best
/// effort: a file it cannot stat or remove (another user's) is left.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        // DirEntry::metadata does not follow a symlink.
        let Ok(m) = e.metadata() else { continue };
        let stale = m
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if m.is_file() && stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// An in-memory store (tests, small tools).
#[derive(Default)]
pub struct MemoryStore {
    blobs: RwLock<HashMap<Digest, Arc<[u8]>>>,
    named: RwLock<HashMap<String, Arc<[u8]>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Digest, Arc<[u8]>>> {
        self.blobs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `reader`'s bytes under the name `namer` gives them, if that
    /// is `expected` (when given).
    fn put_named_by(
        &self,
        expected: Option<&Digest>,
        namer: &mut dyn Namer,
        reader: &mut dyn Read,
    ) -> Result<(Digest, u64)> {
        let mut v = Vec::new();
        let (d, n) = copy_naming(reader, &mut v, namer)?;
        check(expected, d)?;
        self.blobs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(d)
            .or_insert_with(|| Arc::from(v));
        Ok((d, n))
    }
}

impl BlobStore for MemoryStore {
    fn has(&self, digest: &Digest) -> Result<bool> {
        Ok(self.read().contains_key(digest))
    }
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.read().get(digest).map(|b| b.len() as u64))
    }
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let b = self
            .read()
            .get(digest)
            .cloned()
            .ok_or(CasError::NotFound(*digest))?;
        Ok(Box::new(io::Cursor::new(b)))
    }
    fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        self.blobs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(d)
            .or_insert_with(|| Arc::from(bytes));
        Ok(d)
    }
    fn put_stream(
        &self,
        expected: Option<&Digest>,
        reader: &mut dyn Read,
    ) -> Result<(Digest, u64)> {
        self.put_named_by(expected, &mut Sha256::default(), reader)
    }
    fn put_stream_as(
        &self,
        name: &Digest,
        namer: &mut dyn Namer,
        reader: &mut dyn Read,
    ) -> Result<u64> {
        Ok(self.put_named_by(Some(name), namer, reader)?.1)
    }
    fn list(&self) -> Result<Vec<Digest>> {
        let mut v: Vec<Digest> = self.read().keys().copied().collect();
        v.sort();
        Ok(v)
    }
    fn get_named(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let named = self.named.read().unwrap_or_else(|p| p.into_inner());
        Ok(named.get(name).map(|v| v.to_vec()))
    }
    fn put_named(&self, name: &str, value: &[u8]) -> Result<bool> {
        let mut named = self.named.write().unwrap_or_else(|p| p.into_inner());
        named.insert(name.to_string(), Arc::from(value));
        Ok(true)
    }
}

/// The largest named value a [`DirStore`] reads back.
pub const MAX_NAMED_BYTES: u64 = 64 << 20;

/// When a [`DirStore`] makes new blobs durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync every new blob before renaming it into place (the default).
    EachBlob,
    /// Rename without fsync; the caller calls [`DirStore::sync`] once after a
    /// batch (one `syncfs`). A process crash still never exposes a partial
    /// blob (renames are atomic); only a power loss before `sync` can, and
    /// every reader re-verifies digests.
    Deferred,
}

/// An on-disk store: blobs at `root/sha256/<aa>/<hex>`, named values at
/// `root/named/<sha256 of the name>`, temp files in `root/tmp`. Writes go to a unique temp file, are fsynced (see
/// [`Durability`]) and renamed into place, so readers never see partial
/// blobs and concurrent writers of the same blob (threads or processes) are
/// safe.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
    durability: Durability,
}

impl DirStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<DirStore> {
        let root = root.into();
        fs::create_dir_all(root.join("sha256"))
            .map_err(io_err(format!("creating {}", root.display())))?;
        fs::create_dir_all(root.join("tmp"))
            .map_err(io_err(format!("creating {}", root.display())))?;
        remove_stale_temps(&root.join("tmp"));
        Ok(DirStore {
            root,
            durability: Durability::EachBlob,
        })
    }

    /// The same store with another durability mode.
    pub fn with_durability(mut self, durability: Durability) -> DirStore {
        self.durability = durability;
        self
    }

    /// Flushes everything written to the store's filesystem (`syncfs`).
    pub fn sync(&self) -> Result<()> {
        let dir =
            File::open(&self.root).map_err(io_err(format!("opening {}", self.root.display())))?;
        rustix::fs::syncfs(&dir).map_err(|e| CasError::Io {
            context: "syncfs".into(),
            source: e.into(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob for `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("sha256")
            .join(digest.shard())
            .join(digest.hex())
    }

    fn commit(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(()); // identical content already there; temp is removed on drop
        }
        if self.durability == Durability::EachBlob {
            tmp.as_file().sync_all().map_err(io_err("fsync blob"))?;
        }
        let shard = dest.parent().unwrap_or(&self.root).to_path_buf();
        let new_shard = !shard.is_dir();
        // create_dir_all tolerates a concurrent creator.
        fs::create_dir_all(&shard).map_err(io_err(format!("creating {}", shard.display())))?;
        // rename(2) is atomic and replaces: a concurrent writer of the same
        // digest renames identical bytes over ours, never a partial file.
        tmp.persist(&dest).map_err(|e| CasError::Io {
            context: format!("renaming blob into {}", dest.display()),
            source: e.error,
        })?;
        if self.durability == Durability::EachBlob {
            if new_shard {
                sync_dir(&self.root.join("sha256"))?;
            }
            sync_dir(&shard)?;
        }
        Ok(())
    }

    /// The length of the file at `path` if it is a regular file holding
    /// exactly the bytes of `digest`; `None` if absent or damaged.
    fn content_len(
        &self,
        path: &Path,
        digest: &Digest,
        namer: &mut dyn Namer,
    ) -> Result<Option<u64>> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => return Ok(None),
            Err(e) => {
                return Err(CasError::Io {
                    context: format!("opening blob {digest}"),
                    source: e.into(),
                })
            }
        };
        let meta = file
            .metadata()
            .map_err(io_err(format!("stat blob {digest}")))?;
        if !meta.is_file() {
            return Ok(None);
        }
        let mut r = file;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    namer.update(&buf[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreadable copy is a damaged one: fetch it again.
                Err(_) => return Ok(None),
            }
        }
        Ok((n == meta.len() && namer.finish() == *digest).then_some(n))
    }

    fn named_path(&self, name: &str) -> PathBuf {
        self.root
            .join("named")
            .join(Digest::of(name.as_bytes()).hex())
    }

    fn temp(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.root.join("tmp")).map_err(io_err("creating temp file"))
    }

    /// Streams `reader` into a temp file and renames it into place under
    /// the name `namer` gives the bytes, if that is `expected` (when given).
    fn put_named_by(
        &self,
        expected: Option<&Digest>,
        namer: &mut dyn Namer,
        reader: &mut dyn Read,
    ) -> Result<(Digest, u64)> {
        let mut tmp = self.temp()?;
        let (d, n) = {
            let mut w = io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
            let r = copy_naming(reader, &mut w, namer)?;
            w.flush().map_err(io_err("writing blob"))?;
            r
        };
        check(expected, d)?;
        self.commit(tmp, &d)?;
        Ok((d, n))
    }
}

impl BlobStore for DirStore {
    fn has(&self, digest: &Digest) -> Result<bool> {
        Ok(self.size(digest)?.is_some())
    }
    /// Re-reads and re-hashes the blob (opened without following a link
    /// or blocking, and only if it is a regular file): a copy that does not
    /// hash to its digest (cut short, flipped, not a file) is removed and
    /// reported absent. A good copy whose size differs from the declared
    /// one is reported absent but kept (the referrer is wrong, not the
    /// store). Costs one read of the blob.
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> Result<bool> {
        self.has_intact_as(digest, size, &mut Sha256::default())
    }
    /// [`has_intact`](BlobStore::has_intact), checking the copy with `namer`.
    fn has_intact_as(
        &self,
        digest: &Digest,
        size: Option<u64>,
        namer: &mut dyn Namer,
    ) -> Result<bool> {
        let path = self.blob_path(digest);
        if let Some(n) = self.content_len(&path, digest, namer)? {
            return Ok(size.is_none() || size == Some(n));
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CasError::Io {
                context: format!("removing damaged blob {digest}"),
                source,
            }),
        }
    }
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CasError::Io {
                context: format!("stat blob {digest}"),
                source: e,
            }),
        }
    }
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CasError::NotFound(*digest)),
            Err(e) => Err(CasError::Io {
                context: format!("opening blob {digest}"),
                source: e,
            }),
        }
    }
    fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if self.has(&d)? {
            return Ok(d);
        }
        let mut tmp = self.temp()?;
        tmp.write_all(bytes).map_err(io_err("writing blob"))?;
        self.commit(tmp, &d)?;
        Ok(d)
    }
    fn put_stream(
        &self,
        expected: Option<&Digest>,
        reader: &mut dyn Read,
    ) -> Result<(Digest, u64)> {
        self.put_named_by(expected, &mut Sha256::default(), reader)
    }
    fn put_stream_as(
        &self,
        name: &Digest,
        namer: &mut dyn Namer,
        reader: &mut dyn Read,
    ) -> Result<u64> {
        Ok(self.put_named_by(Some(name), namer, reader)?.1)
    }
    fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let base = self.root.join("sha256");
        for shard in fs::read_dir(&base).map_err(io_err(format!("listing {}", base.display())))? {
            let shard = shard.map_err(io_err("listing store"))?;
            if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let shard_name = shard.file_name();
            for f in fs::read_dir(shard.path()).map_err(io_err("listing store shard"))? {
                let f = f.map_err(io_err("listing store shard"))?;
                // Only well-named files in their own shard count as blobs.
                let Some(d) = f
                    .file_name()
                    .to_str()
                    .and_then(|n| Digest::parse_hex(n).ok())
                else {
                    continue;
                };
                if shard_name.to_str() == Some(d.shard().as_str())
                    && f.file_type().map(|t| t.is_file()).unwrap_or(false)
                {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }
    /// Reads at most [`MAX_NAMED_BYTES`]; a longer file is an error.
    fn get_named(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.named_path(name);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CasError::Io {
                    context: format!("opening {}", path.display()),
                    source: e,
                })
            }
        };
        let mut v = Vec::new();
        f.take(MAX_NAMED_BYTES + 1)
            .read_to_end(&mut v)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if v.len() as u64 > MAX_NAMED_BYTES {
            return Err(CasError::Io {
                context: format!("reading {}", path.display()),
                source: io::Error::other(format!("larger than {MAX_NAMED_BYTES} bytes")),
            });
        }
        Ok(Some(v))
    }
    /// Written to a temp file, fsynced and renamed into place.
    fn put_named(&self, name: &str, value: &[u8]) -> Result<bool> {
        let dir = self.root.join("named");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut tmp = self.temp()?;
        tmp.write_all(value)
            .map_err(io_err("writing a named value"))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err("fsync a named value"))?;
        tmp.persist(self.named_path(name))
            .map_err(|e| CasError::Io {
                context: format!("renaming {name:?} into place"),
                source: e.error,
            })?;
        sync_dir(&dir)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stores() -> (tempfile::TempDir, Vec<Box<dyn BlobStore>>) {
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path().join("s")).unwrap();
        (dir, vec![Box::new(MemoryStore::new()), Box::new(ds)])
    }

    #[test]
    fn put_get_list() {
        let (_d, stores) = stores();
        for s in stores {
            let a = s.put(b"alpha").unwrap();
            let b = s.put(b"beta").unwrap();
            assert_eq!(s.put(b"alpha").unwrap(), a);
            assert_eq!(s.get(&a).unwrap(), b"alpha");
            assert_eq!(s.size(&b).unwrap(), Some(4));
            let mut l = vec![a, b];
            l.sort();
            assert_eq!(s.list().unwrap(), l);
            let missing = Digest::of(b"nope");
            assert!(!s.has(&missing).unwrap());
            assert!(matches!(s.open(&missing), Err(CasError::NotFound(_))));
        }
    }

    #[test]
    fn named_values_are_replaced_and_not_blobs() {
        let (dir, stores) = stores();
        for s in stores {
            assert_eq!(s.get_named("hf x@1").unwrap(), None);
            assert!(s.put_named("hf x@1", b"one").unwrap());
            assert!(s.put_named("other", b"").unwrap());
            assert_eq!(s.get_named("hf x@1").unwrap().as_deref(), Some(&b"one"[..]));
            assert!(s.put_named("hf x@1", b"two").unwrap());
            assert_eq!(s.get_named("hf x@1").unwrap().as_deref(), Some(&b"two"[..]));
            assert_eq!(s.get_named("other").unwrap().as_deref(), Some(&b""[..]));
            assert!(s.list().unwrap().is_empty());
        }
        // A DirStore's values outlive the handle.
        let ds = DirStore::open(dir.path().join("s")).unwrap();
        assert_eq!(
            ds.get_named("hf x@1").unwrap().as_deref(),
            Some(&b"two"[..])
        );
    }

    #[test]
    fn wrong_expected_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path()).unwrap();
        let want = Digest::of(b"good");
        let err = ds.put_stream(Some(&want), &mut &b"evil"[..]).unwrap_err();
        assert!(matches!(err, CasError::Integrity { .. }));
        assert!(ds.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "temp file left behind"
        );
    }

    /// Names a blob by the SHA-256 of a prefix and its bytes (a stand-in
    /// for a pack named by its chunks).
    struct Prefixed(Hasher);
    impl Prefixed {
        fn new() -> Prefixed {
            let mut h = Hasher::new();
            h.update(b"prefix:");
            Prefixed(h)
        }
        fn name(bytes: &[u8]) -> Digest {
            let mut p = Prefixed::new();
            p.update(bytes);
            p.finish()
        }
    }
    impl Namer for Prefixed {
        fn update(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&mut self) -> Digest {
            std::mem::replace(self, Prefixed::new()).0.finish()
        }
    }

    #[test]
    fn blobs_named_otherwise_are_stored_and_checked_under_their_name() {
        let (_d, stores) = stores();
        for s in stores {
            let name = Prefixed::name(b"pack");
            let wrong = Prefixed::name(b"other");
            let err = s
                .put_stream_as(&wrong, &mut Prefixed::new(), &mut &b"pack"[..])
                .unwrap_err();
            assert!(matches!(err, CasError::Integrity { .. }), "{err}");
            assert!(s.list().unwrap().is_empty());
            let n = s
                .put_stream_as(&name, &mut Prefixed::new(), &mut &b"pack"[..])
                .unwrap();
            assert_eq!(n, 4);
            assert_eq!(s.get(&name).unwrap(), b"pack");
            assert!(s
                .has_intact_as(&name, Some(4), &mut Prefixed::new())
                .unwrap());
            assert!(!s
                .has_intact_as(&name, Some(5), &mut Prefixed::new())
                .unwrap());
        }
        // On disk the check re-reads the copy: a damaged one is removed.
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path()).unwrap();
        let name = Prefixed::name(b"pack");
        ds.put_stream_as(&name, &mut Prefixed::new(), &mut &b"pack"[..])
            .unwrap();
        fs::write(ds.blob_path(&name), b"pick").unwrap();
        assert!(!ds.has_intact_as(&name, None, &mut Prefixed::new()).unwrap());
        assert!(!ds.has(&name).unwrap());
    }

    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "boom"));
            }
            self.0 -= 1;
            buf[0] = 1;
            Ok(1)
        }
    }

    #[test]
    fn reader_error_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path()).unwrap();
        let err = ds.put_stream(None, &mut Failing(10)).unwrap_err();
        match err {
            CasError::Io { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset)
            }
            other => panic!("{other}"),
        }
        assert!(ds.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn has_intact_removes_a_damaged_copy_so_it_can_be_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path()).unwrap();
        let good = b"the blob".to_vec();
        let d = ds.put(&good).unwrap();
        assert!(ds.has_intact(&d, Some(8)).unwrap());
        assert!(ds.has_intact(&d, None).unwrap());
        // The declared size disagrees: not intact for that referrer, but
        // the copy hashes right, so it is kept.
        assert!(!ds.has_intact(&d, Some(9)).unwrap());
        assert_eq!(ds.get(&d).unwrap(), good);
        // Same size, one byte flipped: removed, then stored again.
        let d = ds.put(&good).unwrap();
        fs::write(ds.blob_path(&d), b"the blub").unwrap();
        assert!(ds.has(&d).unwrap());
        assert!(!ds.has_intact(&d, Some(8)).unwrap());
        assert!(!ds.has(&d).unwrap(), "the damaged copy is gone");
        ds.put_stream(Some(&d), &mut &good[..]).unwrap();
        assert_eq!(ds.get(&d).unwrap(), good);
        // A FIFO or a link in its place: not intact, never blocks.
        fs::remove_file(ds.blob_path(&d)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", ds.blob_path(&d)).unwrap();
        assert!(!ds.has_intact(&d, None).unwrap());
        // The default (other stores): presence and declared size only.
        let m = MemoryStore::new();
        let d = m.put(&good).unwrap();
        assert!(m.has_intact(&d, Some(8)).unwrap());
        assert!(!m.has_intact(&d, Some(7)).unwrap());
        assert!(!m.has_intact(&Digest::of(b"x"), None).unwrap());
    }

    #[test]
    fn open_removes_temp_files_a_killed_writer_left() {
        let dir = tempfile::tempdir().unwrap();
        let ds = DirStore::open(dir.path()).unwrap();
        let tmp = ds.root().join("tmp");
        let (old, fresh) = (tmp.join("old"), tmp.join("fresh"));
        fs::write(&old, b"partial").unwrap();
        fs::write(&fresh, b"being written").unwrap();
        let two_days = std::time::Duration::from_secs(2 * 24 * 3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - two_days)
            .unwrap();
        DirStore::open(dir.path()).unwrap();
        assert!(!old.exists(), "a stale temp file survived");
        assert!(fresh.exists(), "a live writer's temp file was removed");
    }

    #[test]
    fn concurrent_writers_of_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let data: Arc<Vec<u8>> = Arc::new((0..8 << 20).map(|i| (i % 251) as u8).collect());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ds = DirStore::open(dir.path()).unwrap();
                let data = data.clone();
                std::thread::spawn(move || ds.put_stream(None, &mut &data[..]).unwrap().0)
            })
            .collect();
        let ds = DirStore::open(dir.path()).unwrap();
        for h in handles {
            let d = h.join().unwrap();
            assert_eq!(ds.get(&d).unwrap().len(), data.len());
        }
        assert_eq!(ds.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let (_d, stores) = stores();
            for s in stores {
                let d = s.put_stream(None, &mut &data[..]).unwrap().0;
                prop_assert_eq!(d, Digest::of(&data));
                prop_assert_eq!(s.get(&d).unwrap(), data.clone());
                prop_assert_eq!(s.put(&data).unwrap(), d);
                prop_assert_eq!(s.size(&d).unwrap(), Some(data.len() as u64));
                prop_assert_eq!(s.list().unwrap(), vec![d]);
            }
        }
    }
}
