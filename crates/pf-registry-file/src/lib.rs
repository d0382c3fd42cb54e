//! The `file://` backend: an image repository in a plain directory.
//!
//! Layout under the root:
//!
//! ```text
//! manifest.json                      current manifest (renamed into place last)
//! manifest.json.sig                  its signature envelope
//! manifests/sha256/<hex>.json        every committed manifest, by digest (for @sha256: pulls)
//! signatures/sha256/<hex>.sig        every committed signature, by manifest digest
//! blobs/sha256/<aa>/<hex>.zst        zstd-encoded blobs named by their RAW digest
//! .tmp/                              temp files (same filesystem, so renames are atomic)
//! ```
//!
//! Blobs are written to `.tmp` and renamed into place; before the commit
//! every blob file and directory it is in is fsynced (not one `syncfs`,
//! which would also wait for every other program's writes to the
//! filesystem), then the manifest copies are written
//! with fsync + rename and `manifest.json` is renamed last, so a crash (or a
//! power loss) leaves the previous version readable. Readers
//! find the signature for a manifest by its digest, so a reader never pairs
//! a new manifest with an old signature.
//!
//! A repository is not trusted: every file is opened without following a
//! link or blocking and must be a regular file (`open_repo_file`), and
//! manifest and signature reads are bounded. A push treats a blob whose
//! zstd frames do not end exactly at its end (cut short by a power loss)
//! as missing and writes it again. Files are created 0666 and directories
//! 0777, minus the umask.
//!
//! ```
//! use std::sync::Arc;
//! use pf_registry_core::manifest::{AgentInfo, BLOB_MEDIA_TYPE};
//! use pf_registry_core::{
//!     layout, BlobStore, Config, Descriptor, ImageRef, Manifest, MemoryStore, Registry,
//!     SignedImage,
//! };
//! # fn main() -> pf_registry_core::Result<()> {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let repo = ImageRef::parse(&format!("file://{}", dir.path().display()))?;
//! let store = Arc::new(MemoryStore::new());
//! let blob = store.put(b"world state")?;
//! let mut manifest = Manifest::new(
//!     AgentInfo { name: "demo".into(), version: "1".into() },
//!     "2026-01-01T00:00:00Z",
//! );
//! manifest.layers.push(Descriptor {
//!     role: "world.env".into(),
//!     media_type: BLOB_MEDIA_TYPE.into(),
//!     digest: blob,
//!     size: 11,
//! });
//! let rt = tokio::runtime::Runtime::new().expect("runtime");
//! let registry = pf_registry_file::open(&repo, &Config::default())?;
//! rt.block_on(registry.push(store, &SignedImage::new(&manifest, None)))?;
//! assert!(dir.path().join(layout::MANIFEST).is_file());
//! assert!(dir.path().join(layout::blob(&blob)).is_file());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pf_digest::Digest;
use pf_registry_core::{
    layout, ByteStream, CommitRequest, Config, EncodedBlob, Engine, FetchedManifest, ImageRef,
    Location, RegistryError, Result, Transport, UploadedBlob,
};

mod frames;
mod lifecycle;

const TMP: &str = ".tmp";

/// A file-backed transport rooted at one directory.
#[derive(Debug, Clone)]
pub struct FileTransport {
    root: PathBuf,
    display: String,
    pin: Option<Digest>,
}

/// Every option key the `file://` backend takes: none.
pub const OPTIONS: &[&str] = &[];

/// Opens the `file://` reference as a registry on the shared engine. Any
/// backend option is refused ([`RegistryError::BadOption`]).
pub fn open(reference: &ImageRef, config: &Config) -> Result<Engine<FileTransport>> {
    config.check_options("file", OPTIONS)?;
    let t = FileTransport::new(reference)?;
    Ok(Engine::new(t, config.clone(), reference.digest))
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RegistryError {
    let c = context.into();
    move |e| RegistryError::io(c, e)
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> Result<R> + Send + 'static) -> Result<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::io("file backend task", io::Error::other(e.to_string())))?
}

impl FileTransport {
    /// A transport for `reference`, which must be a `file://` reference.
    /// Relative paths resolve against the current directory now.
    pub fn new(reference: &ImageRef) -> Result<FileTransport> {
        let Location::File { path } = &reference.location else {
            return Err(RegistryError::BadReference {
                input: reference.to_string(),
                reason: "not a file:// reference".into(),
            });
        };
        let p = PathBuf::from(path);
        let root = if p.is_absolute() {
            p
        } else {
            std::env::current_dir()
                .map_err(io_err("resolving current directory"))?
                .join(p)
        };
        Ok(FileTransport {
            display: format!("file://{path}"),
            root,
            pin: reference.digest,
        })
    }

    /// The repository root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the encoded blob for `digest`.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(layout::blob(digest))
    }

    fn manifest_by_digest(&self, d: &Digest) -> PathBuf {
        self.root.join(layout::manifest_by_digest(d))
    }

    fn signature_by_digest(&self, d: &Digest) -> PathBuf {
        self.root.join(layout::signature_by_digest(d))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP)
    }

    fn ensure_dirs(&self) -> Result<()> {
        fs::create_dir_all(self.tmp_dir())
            .map_err(io_err(format!("creating {}", self.tmp_dir().display())))
    }

    /// A temp file in `.tmp` created with mode 0666 minus the umask, the
    /// mode every repository file ends up with (a repository on a shared
    /// mount is readable as the user's umask says). Its content is what the
    /// renamed file will hold, so it need not be more private meanwhile.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        self.ensure_dirs()?;
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(self.tmp_dir())
            .map_err(io_err("creating temp file"))
    }

    /// Gives the file at `path` (our own spool file in `.tmp`) the mode a
    /// new repository file gets: 0666 minus the umask, learnt once by
    /// creating a file the same way.
    fn set_shared_mode(&self, path: &Path) -> Result<()> {
        static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let mode = match MODE.get() {
            Some(m) => *m,
            None => {
                let probe = self.temp_file()?;
                let m = probe
                    .as_file()
                    .metadata()
                    .map_err(io_err("stat temp file"))?
                    .permissions()
                    .mode()
                    & 0o777;
                *MODE.get_or_init(|| m)
            }
        };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("chmod {}", path.display())))
    }

    /// Hard-links `spooled` to a fresh temp name and renames that over
    /// `dest` (atomic: readers see the old file or the new one).
    fn replace_with_link(&self, spooled: &Path, dest: &Path) -> Result<()> {
        let tmp = tempfile::Builder::new()
            .make_in(self.tmp_dir(), |p| fs::hard_link(spooled, p))
            .map_err(io_err("linking spooled blob"))?;
        tmp.persist(dest)
            .map_err(|e| RegistryError::io(format!("renaming into {}", dest.display()), e.error))?;
        Ok(())
    }

    /// Makes `blobs` durable: fsyncs each blob file (one an earlier push
    /// made durable is clean, and returns at once), then every directory
    /// between them and the root, which may have gained an entry. Unlike
    /// one `syncfs`, this never waits for other programs' writes to the
    /// filesystem. A blob that is missing (or not a regular file) fails
    /// the commit.
    fn sync_blobs(&self, blobs: &[Digest]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for d in blobs {
            for dir in self.blob_path(d).ancestors().skip(1) {
                if !dirs.insert(dir.to_path_buf()) || dir == self.root {
                    break;
                }
            }
        }
        in_parallel(blobs, |d| {
            self.committed_blob(d)?
                .sync_all()
                .map_err(io_err(format!("fsync {}", self.blob_path(d).display())))
        })?;
        let dirs: Vec<PathBuf> = dirs.into_iter().collect();
        in_parallel(&dirs, |d| sync_dir(d))
    }

    /// Whether every layer of `manifest` is a layer of the current
    /// manifest: then its whole closure is the current one's or part of
    /// it (index blobs are named by their content), and the commit that
    /// published the current manifest made every such blob and its
    /// directory durable before the manifest's rename.
    fn current_covers(&self, manifest: &[u8]) -> bool {
        use pf_registry_core::Manifest;
        let limit = pf_registry_core::manifest::MAX_MANIFEST_BYTES as u64;
        let Ok(Some(current)) = read_bounded(&self.root.join(layout::MANIFEST), limit) else {
            return false;
        };
        let (Ok(new), Ok(current)) = (
            Manifest::from_bytes(manifest),
            Manifest::from_bytes(&current),
        ) else {
            return false;
        };
        let have: std::collections::HashSet<Digest> =
            current.layers.iter().map(|l| l.digest).collect();
        new.layers.iter().all(|l| have.contains(&l.digest))
    }

    /// Fails the commit if a blob is missing (or not a regular file).
    fn check_blobs(&self, blobs: &[Digest]) -> Result<()> {
        blobs
            .iter()
            .try_for_each(|d| self.committed_blob(d).map(drop))
    }

    /// Blob `d` opened for a commit; missing (or not a regular file), it
    /// fails the commit.
    fn committed_blob(&self, d: &Digest) -> Result<File> {
        open_repo_file(&self.blob_path(d))?.ok_or_else(|| {
            RegistryError::not_found(format!(
                "blob {d} at {} (cannot commit a manifest with missing blobs)",
                self.display
            ))
        })
    }

    /// [`Self::write_atomic`], unless `dest` already holds exactly `bytes`
    /// (an unchanged re-push commits what it committed before): then only
    /// its directory is fsynced, in case the rename that put it there is
    /// not yet durable.
    fn write_atomic_if_changed(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        if let Ok(Some(old)) = read_bounded(dest, bytes.len() as u64) {
            if old == bytes {
                return sync_dir(dest.parent().unwrap_or(&self.root));
            }
        }
        self.write_atomic(dest, bytes)
    }

    /// Writes `bytes` to `dest` via temp + fsync + rename (+ dir fsync).
    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        self.replace(dest, bytes, true)
    }

    /// Writes `bytes` to `dest` via temp + rename, so readers see all or
    /// nothing; with `durable`, fsyncs the file before the rename and its
    /// directory after.
    fn replace(&self, dest: &Path, bytes: &[u8], durable: bool) -> Result<()> {
        self.ensure_dirs()?;
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes).map_err(io_err("writing temp file"))?;
        if durable {
            tmp.as_file()
                .sync_all()
                .map_err(io_err("fsync temp file"))?;
        }
        tmp.persist(dest)
            .map_err(|e| RegistryError::io(format!("renaming into {}", dest.display()), e.error))?;
        if durable {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

/// `f` of every item, on a few threads at once: fsyncs wait for the
/// device, not the CPU, so their flushes overlap. The first error, if any.
fn in_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    const THREADS: usize = 8;
    if items.len() < 2 {
        return items.iter().try_for_each(&f);
    }
    let f = &f;
    std::thread::scope(|s| {
        let running: Vec<_> = items
            .chunks(items.len().div_ceil(THREADS))
            .map(|part| s.spawn(move || part.iter().try_for_each(f)))
            .collect();
        running.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(RegistryError::io(
                    "fsync",
                    io::Error::other("an fsync thread panicked"),
                ))
            })
        })
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directory fsync makes the rename durable; not supported on every platform.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == io::ErrorKind::InvalidInput
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            Ok(())
        }
        Err(e) => Err(RegistryError::io(format!("fsync {}", dir.display()), e)),
    }
}

/// Opens the repository file at `path` for reading, or `None` if absent.
///
/// A repository is not trusted: the final component is opened without
/// following a symlink (`O_NOFOLLOW`) and without blocking (`O_NONBLOCK`, so
/// a FIFO cannot hang the open), and the open handle must be a regular file
/// (`fstat`, so a device or FIFO is never read). Anything else is
/// `InvalidData` naming the path.
fn open_repo_file(path: &Path) -> Result<Option<File>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(not_regular(path, "a symbolic link"));
        }
        Err(e) => {
            return Err(RegistryError::io(
                format!("opening {}", path.display()),
                e.into(),
            ))
        }
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?;
    if !meta.is_file() {
        return Err(not_regular(path, "not a regular file"));
    }
    Ok(Some(file))
}

/// Whether the blob file at `path` is present and whole: a regular file
/// (not a link) holding complete zstd frames ([`frames::complete`]: one
/// small read per block header, never the contents). A damaged file counts
/// as missing, so the next push writes it again.
fn blob_is_whole(path: &Path) -> Result<bool> {
    let file = match open_repo_file(path) {
        Ok(Some(f)) => f,
        Ok(None) | Err(RegistryError::InvalidData { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    // An unreadable block is damage too: the push rewrites the file.
    Ok(frames::complete(&file, len).unwrap_or(false))
}

fn not_regular(path: &Path, what: &str) -> RegistryError {
    RegistryError::invalid(
        path.display().to_string(),
        format!("{what}; repository files must be regular files"),
    )
}

/// Reads the repository file at `path` (see [`open_repo_file`]), at most
/// `limit` bytes: reads `limit + 1` and refuses if they all arrive, so a
/// file growing while read cannot exceed the bound either.
fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    let Some(file) = open_repo_file(path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, limit.saturating_add(1)), &mut buf)
        .map_err(io_err(format!("reading {}", path.display())))?;
    if buf.len() as u64 > limit {
        return Err(RegistryError::invalid(
            path.display().to_string(),
            format!("more than {limit} bytes; refused"),
        ));
    }
    Ok(Some(buf))
}

/// `len` bytes at `offset` of the blob file at `path` (opened by
/// [`open_repo_file`]); a range past the file's end is an error, never
/// short data. `len` is already bounded by the caller.
fn read_range(path: &Path, d: &Digest, offset: u64, len: u64, display: &str) -> Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let Some(file) = open_repo_file(path)? else {
        return Err(RegistryError::not_found(format!("blob {d} at {display}")));
    };
    let size = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    let past_end = || pf_registry_core::ranges::past_end(d, offset, len, Some(size));
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(past_end());
    }
    let mut buf = vec![0u8; len as usize];
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(Bytes::from(buf)),
        // The file shrank since the stat.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(past_end()),
        Err(e) => Err(RegistryError::io(format!("reading {}", path.display()), e)),
    }
}

#[async_trait]
impl Transport for FileTransport {
    /// Blobs are named by their raw digest; no need to hash the encoding.
    fn wants_encoded_digest(&self) -> bool {
        false
    }

    fn location(&self) -> String {
        self.display.clone()
    }

    async fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let this = self.clone();
        let digests = digests.to_vec();
        blocking(move || {
            let mut out = Vec::new();
            for d in digests {
                if !blob_is_whole(&this.blob_path(&d))? {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    fn spool_dir(&self) -> Option<PathBuf> {
        self.ensure_dirs().ok()?;
        Some(self.tmp_dir())
    }

    async fn put_blob(&self, blob: &EncodedBlob) -> Result<UploadedBlob> {
        let this = self.clone();
        let blob = blob.clone();
        blocking(move || {
            let dest = this.blob_path(&blob.digest);
            let parent = dest.parent().unwrap_or(&this.root).to_path_buf();
            fs::create_dir_all(&parent)
                .map_err(io_err(format!("creating {}", parent.display())))?;
            match blob.spool_path() {
                Some(spooled) if spooled.parent() == Some(this.tmp_dir().as_path()) => {
                    // Same filesystem: hard-link the spool file into place (atomic,
                    // never overwrites, leaves the spool file to be cleaned up).
                    // Durability comes from the fsyncs in `commit`.
                    // The spool file was created private (0600): give it
                    // the repository's file mode before it becomes the blob.
                    this.set_shared_mode(spooled)?;
                    match fs::hard_link(spooled, &dest) {
                        Ok(()) => {}
                        // `missing` found the file there damaged (or a
                        // concurrent push just wrote it): replace it.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            this.replace_with_link(spooled, &dest)?
                        }
                        Err(_) => {
                            // Filesystems without hard links: copy via temp + rename.
                            let bytes = blob.read_all().map_err(io_err("reading spooled blob"))?;
                            this.write_atomic(&dest, &bytes)?;
                        }
                    }
                }
                _ => {
                    this.ensure_dirs()?;
                    let tmp = this.temp_file()?;
                    blob.persist_to(tmp.path())
                        .map_err(io_err("writing blob"))?;
                    // No fsync here: `commit` makes every blob and its
                    // directory entry durable before the manifest names it.
                    tmp.persist(&dest).map_err(|e| {
                        RegistryError::io(format!("renaming into {}", dest.display()), e.error)
                    })?;
                }
            }
            // The fsyncs in `commit` then find most of a large push on disk.
            pf_registry_core::codec::start_writeback(&dest);
            Ok(UploadedBlob {
                digest: blob.digest,
                encoded_digest: None,
                encoded_size: blob.encoded_size,
                handle: None,
            })
        })
        .await
    }

    async fn commit(&self, req: CommitRequest<'_>) -> Result<String> {
        let this = self.clone();
        let manifest = req.manifest.to_vec();
        let sig = req.signature.map(|s| s.to_vec());
        let digest = req.manifest_digest;
        let blobs: Vec<Digest> = req.blobs.iter().map(|b| b.digest).collect();
        let sent: Vec<Digest> = req
            .blobs
            .iter()
            .filter(|b| b.uploaded.is_some())
            .map(|b| b.digest)
            .collect();
        blocking(move || {
            // Refuse to publish a manifest whose blobs are not all here, and
            // make every blob (written without an fsync) durable first,
            // unless the current manifest's commit already did (blobs this
            // push sent again are new files all the same).
            if this.current_covers(&manifest) {
                this.check_blobs(&blobs)?;
                this.sync_blobs(&sent)?;
            } else {
                this.sync_blobs(&blobs)?;
            }
            this.write_atomic_if_changed(&this.manifest_by_digest(&digest), &manifest)?;
            let sig_path = this.root.join(layout::SIGNATURE);
            match &sig {
                Some(s) => {
                    this.write_atomic_if_changed(&this.signature_by_digest(&digest), s)?;
                    this.write_atomic_if_changed(&sig_path, s)?;
                }
                None => match fs::remove_file(&sig_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(RegistryError::io("removing stale signature", e)),
                },
            }
            // The commit point: one atomic rename (none if the manifest is
            // already the current one).
            this.write_atomic_if_changed(&this.root.join(layout::MANIFEST), &manifest)?;
            Ok(format!("{}@{digest}", this.display))
        })
        .await
    }

    async fn get_manifest(&self) -> Result<FetchedManifest> {
        let this = self.clone();
        blocking(move || {
            let limit = pf_registry_core::manifest::MAX_MANIFEST_BYTES as u64;
            let manifest = match this.pin {
                Some(pin) => match read_bounded(&this.manifest_by_digest(&pin), limit)? {
                    Some(m) => Some(m),
                    None => read_bounded(&this.root.join(layout::MANIFEST), limit)?,
                },
                None => read_bounded(&this.root.join(layout::MANIFEST), limit)?,
            };
            let Some(manifest) = manifest else {
                return Err(RegistryError::not_found(format!(
                    "manifest at {}",
                    this.display
                )));
            };
            let digest = Digest::of(&manifest);
            let sig_limit = pf_sign::SignatureEnvelope::MAX_LEN as u64 + 1;
            let signature = match read_bounded(&this.signature_by_digest(&digest), sig_limit)? {
                Some(s) => Some(s),
                // Older layouts / foreign writers: fall back to the fixed name.
                None => read_bounded(&this.root.join(layout::SIGNATURE), sig_limit)?,
            };
            Ok(FetchedManifest {
                manifest: Bytes::from(manifest),
                signature: signature.map(Bytes::from),
                pin_verified: false,
            })
        })
        .await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let p2 = path.clone();
        let f = match blocking(move || open_repo_file(&p2)).await? {
            Some(f) => tokio::fs::File::from_std(f),
            None => {
                return Err(RegistryError::not_found(format!(
                    "blob {digest} at {}",
                    self.display
                )))
            }
        };
        let s = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)
            .map(|r| r.map_err(|e| RegistryError::io("reading blob file", e)));
        Ok(Box::pin(s))
    }

    /// Seeks in the blob file, opened by the same rules as every
    /// repository file (`open_repo_file`); reads exactly `len` bytes.
    async fn get_blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        pf_registry_core::ranges::check(digest, offset, len)?;
        let path = self.blob_path(digest);
        let (d, display) = (*digest, self.display.clone());
        blocking(move || read_range(&path, &d, offset, len, &display)).await
    }

    async fn exists(&self) -> Result<bool> {
        let path = self.root.join(layout::MANIFEST);
        blocking(move || Ok(open_repo_file(&path)?.is_some())).await
    }

    fn keys(&self) -> Option<&dyn pf_registry_core::KeyStore> {
        Some(self)
    }
}
