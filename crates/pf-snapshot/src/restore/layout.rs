//! Writing an fs tree's files into a directory, reading each blob once.
//!
//! A [`Layout`] creates the directories and empty files up front and knows,
//! for every blob, which byte ranges of which files it fills. Blobs then
//! arrive in any order (from the local store, or straight from a pull
//! through [`super::RestoreTarget`]) and are streamed into place with positional
//! writes, hashed on the way and refused if they do not match their digest.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{
    fchmod, fstat, mkdirat, openat, statat, symlinkat, AtFlags, FileType, Mode, OFlags,
};

use pf_cas::{BlobStore, CasError};
use pf_digest::Digest;
use pf_registry_core::manifest::{validate_relative_path, EntryKind, FsEntry, FsTree};
use pf_registry_core::pack::{PackCheck, Tilings};
use pf_registry_core::{RegistryError, Result};

use super::RestoreOptions;
use crate::fsat::{open_beneath, open_dir};
use crate::io_ctx;

/// One byte range of a blob that lands in one file.
#[derive(Debug, Clone, Copy)]
struct Place {
    file: usize,
    file_off: u64,
    blob_off: u64,
    len: u64,
}

/// A file this restore created: its tree path, final mode, the (device,
/// inode) it was created as, and whether it has its final mode already.
#[derive(Debug)]
struct Created {
    rel: String,
    mode: u32,
    id: (u64, u64),
    mode_set: bool,
}

/// A file [`Layout::create_file`] made: its index among the tree's files,
/// its (device, inode), and whether it has its final mode.
type Made = (usize, (u64, u64), bool);

/// A restore in progress: directories and empty files created, blobs mapped
/// to the file ranges they fill.
///
/// The target is written by an untrusted agent while pf restores into it
/// (DESIGN.md, "Threat model"): every operation goes through a handle on
/// `dest` and paths resolved beneath it with no symlink followed
/// (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or one
/// `O_NOFOLLOW` open per component); each file is checked to be the inode
/// this restore created before it is written or `fchmod`ed through its
/// open handle; directories stay private (0700) until [`Layout::finish`]
/// gives them their modes, last.
#[derive(Debug)]
pub struct Layout {
    dest: PathBuf,
    root: OwnedFd,
    created_dest: bool,
    tree: FsTree,
    files: Vec<Created>,
    places: HashMap<Digest, Vec<Place>>,
    /// Packs named by their chunks, with their tilings (checked chunk by
    /// chunk as they are written).
    by_chunks: Tilings,
    written: Mutex<HashSet<Digest>>,
}

/// Bytes of file content `tree` restores (saturating).
pub(crate) fn total_size(tree: &FsTree) -> u64 {
    tree.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .fold(0u64, |t, e| t.saturating_add(e.size))
}

/// Splits a tree path into its parent directory (`""` for the root) and name.
fn split_parent(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

const DIR_PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY);

impl Layout {
    /// Validates `tree` and prepares `dest` (which must not exist or be
    /// empty): refuses symlinks that point outside it, creates directories
    /// (0700) and empty files (0600). Nothing is ever written through a
    /// symlink.
    ///
    /// The total of file content is checked against
    /// [`RestoreOptions::max_size`] and the free space of `dest`'s
    /// filesystem before anything is written.
    pub fn create(tree: FsTree, dest: &Path, options: &RestoreOptions) -> Result<Layout> {
        tree.validate()?;
        let total = total_size(&tree);
        if total > options.max_size {
            return Err(RegistryError::invalid(
                dest.display().to_string(),
                format!(
                    "the image's files total {total} bytes, above the restore limit of {} bytes (--max-size)",
                    options.max_size
                ),
            ));
        }
        let created_dest = !dest.exists();
        if !created_dest {
            let mut it =
                fs::read_dir(dest).map_err(io_ctx(format!("listing {}", dest.display())))?;
            if it.next().is_some() {
                return Err(RegistryError::invalid(
                    dest.display().to_string(),
                    "restore directory is not empty",
                ));
            }
        }
        let links: HashSet<&str> = tree
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Symlink)
            .map(|e| e.path.as_str())
            .collect();
        for e in tree.entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
            let t = e.target.as_deref().unwrap_or("");
            if !symlink_stays_inside(&e.path, t) {
                return Err(RegistryError::invalid(
                    format!("symlink {}", e.path),
                    format!("target {t:?} points outside the restore directory"),
                ));
            }
            if climbs_out_of_a_link(&e.path, t, &links) {
                return Err(RegistryError::invalid(
                    format!("symlink {}", e.path),
                    format!("target {t:?} uses '..' after another symlink of the tree"),
                ));
            }
        }
        fs::create_dir_all(dest).map_err(io_ctx(format!("creating {}", dest.display())))?;
        let root = match open_dir(dest) {
            Ok(r) => r,
            Err(e) => {
                if created_dest {
                    let _ = fs::remove_dir_all(dest);
                }
                return Err(RegistryError::io(format!("opening {}", dest.display()), e));
            }
        };
        let free = rustix::fs::fstatvfs(&root)
            .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
            .unwrap_or(u64::MAX);
        if total > free {
            if created_dest {
                let _ = fs::remove_dir_all(dest);
            }
            return Err(RegistryError::invalid(
                dest.display().to_string(),
                format!("the image's files total {total} bytes, above the {free} bytes free there"),
            ));
        }
        if let Some(f) = &options.on_total {
            f(total);
        }
        let mut layout = Layout {
            dest: dest.to_path_buf(),
            root,
            created_dest,
            tree: FsTree::default(),
            files: Vec::new(),
            places: HashMap::new(),
            by_chunks: pf_registry_core::pack::chunk_named(&tree),
            written: Mutex::new(HashSet::new()),
        };
        match layout.populate(&tree) {
            Ok(()) => {
                layout.tree = tree;
                Ok(layout)
            }
            Err(e) => {
                // Leave `dest` as it was found.
                layout.abandon();
                Err(e)
            }
        }
    }

    fn shown(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    /// A handle on directory `rel` beneath the root, creating it and its
    /// missing parents (0700) on the way; no symlink is followed.
    fn make_dirs(&self, rel: &str) -> Result<OwnedFd> {
        let ctx = |e: rustix::io::Errno| {
            RegistryError::io(format!("creating {}", self.shown(rel).display()), e.into())
        };
        let mut cur = openat(
            self.root.as_fd(),
            ".",
            DIR_PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(ctx)?;
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            match mkdirat(&cur, c, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(ctx(e)),
            }
            cur = openat(
                &cur,
                c,
                DIR_PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(ctx)?;
        }
        Ok(cur)
    }

    /// Creates the directories and empty files of `tree` and maps its blobs.
    fn populate(&mut self, tree: &FsTree) -> Result<()> {
        let mut dirs: Vec<&str> = tree
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| e.path.as_str())
            .collect();
        dirs.sort_by_key(|p| p.matches('/').count());
        for d in dirs {
            validate_relative_path(d).map_err(|r| RegistryError::invalid("fs tree", r))?;
            self.make_dirs(d)?;
        }
        // Files, one directory's on one thread with its handle reused:
        // creates in one directory queue on its lock, creates in different
        // ones run in parallel.
        let files: Vec<&FsEntry> = tree
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .collect();
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (i, e) in files.iter().enumerate() {
            validate_relative_path(&e.path).map_err(|r| RegistryError::invalid("fs tree", r))?;
            let (dir, _) = split_parent(&e.path);
            let g = *group_of.entry(dir).or_insert_with(|| {
                groups.push((dir, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let this = &*self;
        let made: Vec<Result<Vec<Made>>> = {
            use rayon::prelude::*;
            groups
                .par_iter()
                .map(|(dir, members)| {
                    let at = this.make_dirs(dir)?;
                    members
                        .iter()
                        .map(|&i| {
                            let (id, set) = this.create_file(&at, files[i])?;
                            Ok((i, id, set))
                        })
                        .collect()
                })
                .collect()
        };
        let mut ids = vec![((0, 0), false); files.len()];
        for group in made {
            for (i, id, set) in group? {
                ids[i] = (id, set);
            }
        }
        for (e, (id, mode_set)) in files.into_iter().zip(ids) {
            let file = self.files.len();
            let mut file_off = 0;
            for piece in tree.pieces(e) {
                self.places.entry(piece.blob).or_default().push(Place {
                    file,
                    file_off,
                    blob_off: piece.offset,
                    len: piece.len,
                });
                file_off += piece.len;
            }
            self.files.push(Created {
                rel: e.path.clone(),
                mode: e.mode,
                id,
                mode_set,
            });
        }
        Ok(())
    }

    /// Creates file `e` (empty, private) in directory `at`; returns its
    /// (device, inode) and whether it got its final mode already: a mode
    /// the owner can write is set now, through the new handle (its
    /// directories are private until [`Layout::finish`]), any other at
    /// the end, once the file is written.
    fn create_file(&self, at: &OwnedFd, e: &FsEntry) -> Result<((u64, u64), bool)> {
        let (_, name) = split_parent(&e.path);
        let shown = || self.shown(&e.path).display().to_string();
        let fd = openat(
            at,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| RegistryError::io(format!("creating {}", shown()), err.into()))?;
        let st =
            fstat(&fd).map_err(|err| RegistryError::io(format!("stat {}", shown()), err.into()))?;
        let set = e.mode & 0o200 != 0;
        if set {
            fchmod(&fd, Mode::from_raw_mode(e.mode & 0o777))
                .map_err(|err| RegistryError::io(format!("chmod {}", shown()), err.into()))?;
        }
        Ok(((st.st_dev, st.st_ino), set))
    }

    /// Opens file `i` of this restore beneath the root (no symlink
    /// followed), refusing anything but the inode this restore created.
    fn open_created(&self, i: usize, flags: OFlags) -> io::Result<File> {
        let c = &self.files[i];
        let ctx = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("opening {}: {e}", self.shown(&c.rel).display()),
            )
        };
        let fd = open_beneath(
            self.root.as_fd(),
            &c.rel,
            flags | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(ctx)?;
        let st = fstat(&fd).map_err(|e| ctx(e.into()))?;
        self.check_created(c, &st)?;
        Ok(File::from(fd))
    }

    /// Whether `st` is file `c` as this restore created it: a regular file,
    /// the same inode on the same device.
    fn check_created(&self, c: &Created, st: &rustix::fs::Stat) -> io::Result<()> {
        let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        if regular && (st.st_dev, st.st_ino) == c.id {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} was replaced during the restore",
                self.shown(&c.rel).display()
            ),
        ))
    }

    /// Reorders `blobs` (each named by `digest`) so that blobs filling the
    /// same file are spread apart: each blob counts for the file it fills
    /// most, and the next blob is taken from the file with the most blobs
    /// left other than the last one's (blobs that fill no file first,
    /// each file's blobs in their order). Blobs fetched side by side then
    /// write into different files instead of queueing on one file's
    /// lock.
    pub fn spread<T>(&self, blobs: &mut Vec<T>, digest: impl Fn(&T) -> Digest) {
        let mut none = Vec::new();
        let mut by_file: Vec<(usize, std::collections::VecDeque<T>)> = Vec::new();
        let mut at: HashMap<usize, usize> = HashMap::new();
        for b in blobs.drain(..) {
            let main = self
                .places
                .get(&digest(&b))
                .and_then(|ps| ps.iter().max_by_key(|p| p.len))
                .map(|p| p.file);
            match main {
                None => none.push(b),
                Some(f) => {
                    let i = *at.entry(f).or_insert_with(|| {
                        by_file.push((f, Default::default()));
                        by_file.len() - 1
                    });
                    by_file[i].1.push_back(b);
                }
            }
        }
        blobs.extend(none);
        let mut last = None;
        loop {
            let pick = by_file
                .iter()
                .enumerate()
                .filter(|(_, (f, q))| !q.is_empty() && Some(*f) != last)
                .max_by_key(|(i, (_, q))| (q.len(), std::cmp::Reverse(*i)))
                .or_else(|| by_file.iter().enumerate().find(|(_, (_, q))| !q.is_empty()))
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            let (f, q) = &mut by_file[i];
            if let Some(b) = q.pop_front() {
                blobs.push(b);
            }
            last = Some(*f);
        }
    }

    /// Whether `digest` fills some file range.
    pub fn wants(&self, digest: &Digest) -> bool {
        self.places.contains_key(digest)
    }

    /// Streams blob `digest` from `reader` into every range it fills,
    /// hashing as it goes (chunk by chunk for a pack named by its chunks).
    /// Errors like [`BlobStore::put_stream`]: reader
    /// failures say `reading blob stream`, and a content mismatch is
    /// [`CasError::Integrity`] (the ranges then hold bad bytes until the
    /// blob is written again, and the restore is not finished).
    pub fn write_blob(
        &self,
        digest: &Digest,
        reader: &mut dyn Read,
    ) -> pf_cas::Result<(Digest, u64)> {
        let places = self.places.get(digest).map(Vec::as_slice).unwrap_or(&[]);
        // One file open at a time (a pack can fill thousands of files, more
        // than the descriptor limit); consecutive writes to the same file
        // reuse it.
        let mut current: Option<(usize, File)> = None;
        let mut h = PackCheck::new(self.by_chunks.get(digest).map(Vec::as_slice));
        let mut buf = vec![0u8; 256 * 1024];
        let mut pos = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CasError::Io {
                        context: "reading blob stream".into(),
                        source,
                    })
                }
            };
            h.update(&buf[..n]);
            let end = pos + n as u64;
            for p in places {
                let (s, e) = (pos.max(p.blob_off), end.min(p.blob_off + p.len));
                if s >= e {
                    continue;
                }
                let f = match &current {
                    Some((i, f)) if *i == p.file => f,
                    _ => {
                        let f = self
                            .open_created(p.file, OFlags::WRONLY)
                            .map_err(|source| CasError::Io {
                                context: "restoring".into(),
                                source,
                            })?;
                        &current.insert((p.file, f)).1
                    }
                };
                let slice = &buf[(s - pos) as usize..(e - pos) as usize];
                f.write_all_at(slice, p.file_off + (s - p.blob_off))
                    .map_err(|source| CasError::Io {
                        context: format!(
                            "writing blob into {}",
                            self.shown(&self.files[p.file].rel).display()
                        ),
                        source,
                    })?;
            }
            pos = end;
        }
        let actual = h.finish();
        if actual != *digest {
            return Err(CasError::Integrity {
                expected: *digest,
                actual,
            });
        }
        // The right blob, but shorter than the ranges the tree says it
        // fills (an inconsistent tree): refuse rather than leave holes. This
        // is bad data (exit 4), never a transport error to retry: the error
        // travels as a `RegistryError::InvalidData` the engine recovers.
        if let Some(need) = places.iter().map(|p| p.blob_off + p.len).max() {
            if pos < need {
                return Err(CasError::Io {
                    context: "restoring".into(),
                    source: RegistryError::invalid(
                        format!("blob {digest}"),
                        format!("{pos} bytes, but the fs tree reads up to byte {need}"),
                    )
                    .into_io(),
                });
            }
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(*digest);
        }
        Ok((actual, pos))
    }

    /// Writes ranges of blob `digest` read on their own (`ranges`: raw
    /// offset to verified bytes, see [`Registry::read_chunks`]) into every
    /// file range of that blob, and marks the blob written. Every file
    /// range must lie within one given range.
    ///
    /// [`Registry::read_chunks`]: pf_registry_core::Registry::read_chunks
    pub fn write_ranges(
        &self,
        digest: &Digest,
        ranges: &std::collections::BTreeMap<u64, bytes::Bytes>,
    ) -> Result<()> {
        let places = self.places.get(digest).map(Vec::as_slice).unwrap_or(&[]);
        let mut current: Option<(usize, File)> = None;
        for p in places {
            let src = ranges
                .range(..=p.blob_off)
                .next_back()
                .and_then(|(start, b)| {
                    let from = (p.blob_off - start) as usize;
                    b.get(from..from + p.len as usize)
                })
                .ok_or_else(|| {
                    RegistryError::invalid(
                        format!("blob {digest}"),
                        format!("no chunk read holds bytes {}+{}", p.blob_off, p.len),
                    )
                })?;
            let f = match &current {
                Some((i, f)) if *i == p.file => f,
                _ => {
                    let f = self
                        .open_created(p.file, OFlags::WRONLY)
                        .map_err(|e| RegistryError::io("restoring", e))?;
                    &current.insert((p.file, f)).1
                }
            };
            f.write_all_at(src, p.file_off).map_err(|e| {
                RegistryError::io(
                    format!(
                        "writing into {}",
                        self.shown(&self.files[p.file].rel).display()
                    ),
                    e,
                )
            })?;
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(*digest);
        }
        Ok(())
    }

    /// Writes every blob not yet written from `store` (in parallel), then
    /// sets file modes, creates symlinks and sets directory modes. Returns
    /// the bytes of file content restored.
    pub fn finish(&self, store: &dyn BlobStore) -> Result<u64> {
        let pending: Vec<Digest> = {
            let w = self
                .written
                .lock()
                .map_err(|_| RegistryError::io("restore", io::Error::other("lock poisoned")))?;
            let mut v: Vec<Digest> = self
                .places
                .keys()
                .filter(|d| !w.contains(d))
                .copied()
                .collect();
            v.sort();
            v
        };
        {
            use rayon::prelude::*;
            pending.par_iter().try_for_each(|d| -> Result<()> {
                let mut r = store.open(d)?;
                self.write_blob(d, &mut r)?;
                Ok(())
            })?;
        }
        // Modes through the open handles (fchmod), never through a path.
        // A file the owner can write got its mode when created: it is only
        // checked to still be the regular file created, by inode (through
        // its directory's handle, no symlink followed), so a swap is still
        // reported.
        let mut parent: Option<(&str, OwnedFd)> = None;
        for (i, c) in self.files.iter().enumerate() {
            if c.mode_set {
                let (dir, name) = split_parent(&c.rel);
                let at = match parent.take() {
                    Some((d, fd)) if d == dir => fd,
                    _ => self.make_dirs(dir)?,
                };
                let st = statat(&at, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                    RegistryError::io(format!("stat {}", self.shown(&c.rel).display()), e.into())
                })?;
                self.check_created(c, &st)
                    .map_err(io_ctx("restoring".into()))?;
                parent = Some((dir, at));
                continue;
            }
            let f = self
                .open_created(i, OFlags::RDONLY)
                .map_err(io_ctx("restoring".into()))?;
            fchmod(&f, Mode::from_raw_mode(c.mode & 0o777)).map_err(|e| {
                RegistryError::io(format!("chmod {}", self.shown(&c.rel).display()), e.into())
            })?;
        }
        let mut bytes = 0;
        for e in &self.tree.entries {
            match e.kind {
                EntryKind::File => bytes += e.size,
                EntryKind::Symlink => {
                    let (dir, name) = split_parent(&e.path);
                    let at = self.make_dirs(dir)?;
                    symlinkat(e.target.as_deref().unwrap_or(""), &at, name).map_err(|err| {
                        RegistryError::io(
                            format!("symlink {}", self.shown(&e.path).display()),
                            err.into(),
                        )
                    })?;
                }
                EntryKind::Dir => {}
                _ => return Err(RegistryError::invalid(&e.path, "unsupported entry kind")),
            }
        }
        // Directories last, deepest first: until now they were private.
        let mut dirs: Vec<_> = self
            .tree
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .collect();
        dirs.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
        for d in dirs {
            let chmod = |e: io::Error| {
                RegistryError::io(format!("chmod {}", self.shown(&d.path).display()), e)
            };
            let fd = open_beneath(
                self.root.as_fd(),
                &d.path,
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(chmod)?;
            fchmod(&fd, Mode::from_raw_mode((d.mode & 0o777) | 0o700))
                .map_err(|e| chmod(e.into()))?;
        }
        Ok(bytes)
    }

    /// Removes what this restore created (after a failed pull), leaving
    /// `dest` as it was: absent, or empty.
    pub fn abandon(&self) {
        if self.created_dest {
            let _ = fs::remove_dir_all(&self.dest);
        } else if let Ok(rd) = fs::read_dir(&self.dest) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                    _ => fs::remove_file(&p),
                };
            }
        }
    }
}

/// Restores `tree` from `store` into `dest` (which must not exist or be empty).
#[cfg(test)]
fn restore(tree: FsTree, store: &dyn BlobStore, dest: &Path) -> Result<u64> {
    let layout = Layout::create(tree, dest, &RestoreOptions::default())?;
    layout.finish(store)
}

/// Checks a symlink at `link_path` (relative) pointing to `target` stays inside the root.
pub fn symlink_stays_inside(link_path: &str, target: &str) -> bool {
    let t = Path::new(target);
    if t.is_absolute() {
        return false;
    }
    // Depth of the directory containing the link.
    let mut depth: i64 = link_path.split('/').count() as i64 - 1;
    for c in t.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Whether `target` (of the link at `link_path`) goes through another
/// symlink of the tree and then uses `..`: the kernel resolves that `..`
/// from wherever the other link points, so the text-only containment check
/// cannot vouch for it (`u -> .` then `x -> u/..` escapes).
fn climbs_out_of_a_link(link_path: &str, target: &str, links: &HashSet<&str>) -> bool {
    let mut at: Vec<&str> = link_path.split('/').collect();
    at.pop();
    let mut through_link = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if through_link => return true,
            ".." => {
                at.pop();
            }
            name => {
                at.push(name);
                through_link |= links.contains(at.join("/").as_str());
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::file;
    use pf_cas::MemoryStore;
    use pf_registry_core::manifest::{Chunk, FsEntry};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn packed_chunked_and_duplicate_files_restore_byte_for_byte() {
        let store = MemoryStore::new();
        let pack = store.put(b"alphabetagamma").unwrap();
        let whole = store.put(b"same bytes").unwrap();
        let c1 = store.put(b"first half/").unwrap();
        let c2 = store.put(b"second half").unwrap();
        let mut big = file("d/big", 22, c1, None);
        big.blob = None;
        big.chunks = vec![Chunk { blob: c1, size: 11 }, Chunk { blob: c2, size: 11 }];
        let tree = FsTree {
            entries: vec![
                file("a", 5, pack, Some(0)),
                file("b", 4, pack, Some(5)),
                file("c", 5, pack, Some(9)),
                file("dup1", 10, whole, None),
                file("dup2", 10, whole, None),
                big,
            ],
            packs: vec![Chunk {
                blob: pack,
                size: 14,
            }],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let n = restore(tree, &store, &dest).unwrap();
        assert_eq!(n, 5 + 4 + 5 + 10 + 10 + 22);
        let read = |p: &str| fs::read(dest.join(p)).unwrap();
        assert_eq!(read("a"), b"alpha");
        assert_eq!(read("b"), b"beta");
        assert_eq!(read("c"), b"gamma");
        assert_eq!(read("dup1"), b"same bytes");
        assert_eq!(read("dup2"), b"same bytes");
        assert_eq!(read("d/big"), b"first half/second half");
        let mode = fs::metadata(dest.join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn spread_interleaves_files_and_keeps_each_files_order() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let chunked = |path: &str, names: &[&str]| {
            let mut f = file(path, 10 * names.len() as u64, d(names[0]), None);
            f.blob = None;
            f.chunks = names
                .iter()
                .map(|n| Chunk {
                    blob: d(n),
                    size: 10,
                })
                .collect();
            f
        };
        let pack = d("pack");
        let tree = FsTree {
            entries: vec![
                chunked("m", &["m1", "m2", "m3", "m4"]),
                chunked("k", &["k1", "k2"]),
                file("a", 5, pack, Some(0)),
                file("c", 6, pack, Some(5)),
            ],
            packs: vec![Chunk {
                blob: pack,
                size: 11,
            }],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(tree, &dir.path().join("out"), &Default::default()).unwrap();
        let mut blobs: Vec<&str> = vec!["other", "m1", "m2", "m3", "m4", "k1", "k2", "pack"];
        layout.spread(&mut blobs, |s| d(s));
        assert_eq!(blobs, ["other", "m1", "k1", "m2", "k2", "m3", "pack", "m4"]);
        layout.abandon();
    }

    #[test]
    fn a_corrupt_blob_is_refused_and_abandon_cleans_up() {
        let store = MemoryStore::new();
        let good = Digest::of(b"expected content");
        let tree = FsTree {
            entries: vec![file("x/y", 16, good, None)],
            packs: vec![],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let layout = Layout::create(tree, &dest, &RestoreOptions::default()).unwrap();
        let err = layout
            .write_blob(&good, &mut &b"tampered content"[..])
            .unwrap_err();
        assert!(matches!(err, CasError::Integrity { .. }), "{err}");
        // Not marked written: finish looks for it in the store and fails.
        assert!(layout.finish(&store).is_err());
        layout.abandon();
        assert!(!dest.exists());
    }

    #[test]
    fn a_layout_that_cannot_be_created_leaves_dest_as_found() {
        let empty = |path: &str| FsEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 0,
            blob: None,
            chunks: vec![],
            target: None,
            offset: None,
            parts: vec![],
        };
        // "c" is a file, so "c/d" cannot be created under it.
        let tree = FsTree {
            entries: vec![empty("a"), empty("c"), empty("c/d")],
            packs: vec![],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new");
        assert!(Layout::create(tree.clone(), &dest, &RestoreOptions::default()).is_err());
        assert!(!dest.exists());
        let existing = dir.path().join("existing");
        fs::create_dir(&existing).unwrap();
        assert!(Layout::create(tree, &existing, &RestoreOptions::default()).is_err());
        assert_eq!(fs::read_dir(&existing).unwrap().count(), 0);
    }

    #[test]
    fn dotdot_after_another_link_is_refused() {
        let links: HashSet<&str> = ["u", "x", "d/l"].into_iter().collect();
        assert!(climbs_out_of_a_link("x", "u/..", &links));
        assert!(climbs_out_of_a_link("a/b", "../u/../c", &links));
        assert!(climbs_out_of_a_link("y", "d/l/../z", &links));
        // Chains without '..' after a link, and '..' before one, are fine.
        assert!(!climbs_out_of_a_link("lib.so", "u", &links));
        assert!(!climbs_out_of_a_link("d/k", "../u/file", &links));
        assert!(!climbs_out_of_a_link("d/k", "../d/l", &links));
        // End to end: the pair from the review is refused before writing.
        let link = |path: &str, target: &str| FsEntry {
            path: path.into(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: 0,
            blob: None,
            chunks: vec![],
            target: Some(target.into()),
            offset: None,
            parts: vec![],
        };
        let tree = FsTree {
            entries: vec![link("u", "."), link("x", "u/..")],
            packs: vec![],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let err =
            Layout::create(tree, &dir.path().join("out"), &RestoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("after another symlink"), "{err}");
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn symlink_containment() {
        assert!(symlink_stays_inside("a/link", "../b"));
        assert!(symlink_stays_inside("link", "b/c"));
        assert!(!symlink_stays_inside("link", "../x"));
        assert!(!symlink_stays_inside("a/link", "../../x"));
        assert!(!symlink_stays_inside("link", "/etc/passwd"));
        assert!(!symlink_stays_inside("a/link", "b/../../../x"));
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn symlinks_planted_in_the_target_are_never_written_or_chmodded_through() {
        let store = MemoryStore::new();
        let content = b"image content";
        let blob = store.put(content).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(outside.path().join("d")).unwrap();
        let victim2 = outside.path().join("d/f");
        fs::write(&victim2, "secret").unwrap();
        fs::set_permissions(&victim2, fs::Permissions::from_mode(0o600)).unwrap();
        let mut a = file("a", 13, blob, None);
        a.mode = 0o666;
        let mut f = file("d/f", 13, blob, None);
        f.mode = 0o666;
        let mut d = file("d", 0, blob, None);
        (d.kind, d.mode, d.blob) = (EntryKind::Dir, 0o777, None);
        let tree = FsTree {
            entries: vec![a, d, f],
            packs: vec![],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        // A file swapped for a symlink after its content was written.
        let layout = Layout::create(tree.clone(), &dest, &RestoreOptions::default()).unwrap();
        assert_eq!(mode_of(&dest.join("d")), 0o700, "private until the end");
        layout.write_blob(&blob, &mut &content[..]).unwrap();
        fs::remove_file(dest.join("a")).unwrap();
        std::os::unix::fs::symlink(&victim, dest.join("a")).unwrap();
        assert!(layout.finish(&store).is_err());
        layout.abandon();
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
        assert_eq!(mode_of(&victim), 0o600);
        // A directory swapped for a symlink before its files are written.
        let layout = Layout::create(tree, &dest, &RestoreOptions::default()).unwrap();
        fs::remove_dir_all(dest.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("d"), dest.join("d")).unwrap();
        assert!(layout.finish(&store).is_err());
        layout.abandon();
        assert_eq!(fs::read(&victim2).unwrap(), b"secret");
        assert_eq!(mode_of(&victim2), 0o600);
        assert!(!dest.exists());
    }

    #[test]
    fn totals_above_the_limit_or_the_free_space_are_refused_before_writing() {
        let blob = Digest::of(b"x");
        // Ten files of 1 TiB each: more than this disk has free.
        let tree = FsTree {
            entries: (0..10)
                .map(|i| file(&format!("f{i}"), 1 << 40, blob, None))
                .collect(),
            packs: vec![],
            chunk_table: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut opts = RestoreOptions::default();
        let err = Layout::create(tree.clone(), &dest, &opts).unwrap_err();
        assert!(err.to_string().contains("above the restore limit"), "{err}");
        assert!(!dest.exists());
        opts.max_size = u64::MAX;
        let err = Layout::create(tree, &dest, &opts).unwrap_err();
        assert!(err.to_string().contains("free there"), "{err}");
        assert!(matches!(err, RegistryError::InvalidData { .. }), "{err}");
        assert!(!dest.exists());
    }
}
