//! Listing a directory tree through directory handles.
//!
//! The agent whose directory is snapshotted may swap any entry for a
//! symlink while pf walks it. Each directory is opened from its parent's
//! handle with `O_NOFOLLOW | O_DIRECTORY` and checked to be the inode just
//! stat'ed (`statat` without following); every regular file found is
//! remembered with its device and inode, and later opened only beneath the
//! root handle, never through a symlink, and only if it is still that
//! inode ([`SourceFile::open`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use pf_registry_core::manifest::{validate_relative_path, EntryKind, FsEntry, FsTree};
use pf_registry_core::{RegistryError, Result};
use rustix::fs::{
    fstat, openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags, RawDir, Stat,
};

use crate::io_ctx;
use crate::source::{stamps_trustworthy, SourceFile, Stamp};

/// A regular file found by the walk whose content is still to be hashed.
pub(crate) struct PendingFile {
    /// Index of its entry in the tree.
    pub(crate) index: usize,
    /// Where to open it again.
    pub(crate) file: Arc<SourceFile>,
    /// Its stat cache key (the absolute path).
    pub(crate) key: String,
    /// Its stat as the walk saw it.
    pub(crate) st: Stamp,
}

/// What the walk found besides the tree entries.
pub(crate) struct Walked {
    /// Regular files, in tree order.
    pub(crate) todo: Vec<PendingFile>,
    /// For each device met, whether its stamps can stand in for a re-hash.
    pub(crate) stampable: HashMap<u64, bool>,
}

/// Lists `root_path` into `tree` (sorted, depth first): directories and
/// symlinks get their entries, regular files an entry with no content yet
/// and a [`PendingFile`]. Special files and names that are not UTF-8 are
/// skipped with a warning.
pub(crate) fn walk(
    root_path: &Path,
    tree: &mut FsTree,
    warn: &mut dyn FnMut(String),
) -> Result<Walked> {
    let root = crate::fsat::open_dir(root_path)
        .map_err(io_ctx(format!("opening {}", root_path.display())))?;
    let st =
        fstat(&root).map_err(|e| RegistryError::io(root_path.display().to_string(), e.into()))?;
    let mut w = Walked {
        todo: Vec::new(),
        stampable: HashMap::new(),
    };
    w.stampable
        .insert(st.st_dev, stamps_trustworthy(root.as_fd()));
    let root = Arc::new(root);
    let mut ctx = Ctx {
        root: &root,
        root_path,
        tree,
        w: &mut w,
        warn,
    };
    ctx.dir(root.as_fd(), "")?;
    Ok(w)
}

struct Ctx<'a> {
    root: &'a Arc<OwnedFd>,
    root_path: &'a Path,
    tree: &'a mut FsTree,
    w: &'a mut Walked,
    warn: &'a mut dyn FnMut(String),
}

fn entry(path: String, kind: EntryKind, mode: u32, target: Option<String>) -> FsEntry {
    FsEntry {
        path,
        kind,
        mode,
        size: 0,
        blob: None,
        chunks: vec![],
        target,
        offset: None,
        parts: vec![],
    }
}

impl Ctx<'_> {
    fn dir(&mut self, dir: BorrowedFd<'_>, rel_dir: &str) -> Result<()> {
        let shown_dir = self.root_path.join(rel_dir);
        let listing = |e: rustix::io::Errno| {
            RegistryError::io(format!("listing {}", shown_dir.display()), e.into())
        };
        let mut names = list(dir).map_err(listing)?;
        names.sort();
        let stats = stat_all(dir, &names);
        for (name, st) in names.iter().zip(stats) {
            let name = OsStr::from_bytes(name);
            let path = shown_dir.join(name);
            let st =
                st.map_err(|e| RegistryError::io(format!("stat {}", path.display()), e.into()))?;
            let rel = match name.to_str() {
                Some(n) if rel_dir.is_empty() => n.to_string(),
                Some(n) => format!("{rel_dir}/{n}"),
                None => {
                    (self.warn)(format!(
                        "skipping {}: path is not valid UTF-8",
                        path.display()
                    ));
                    continue;
                }
            };
            if let Err(r) = validate_relative_path(&rel) {
                (self.warn)(format!("skipping {}: {r}", path.display()));
                continue;
            }
            let mode = st.st_mode & 0o7777;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let sub = openat(
                        dir,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| {
                        RegistryError::io(format!("opening {}", path.display()), e.into())
                    })?;
                    let now = fstat(&sub).map_err(|e| {
                        RegistryError::io(format!("stat {}", path.display()), e.into())
                    })?;
                    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                        return Err(replaced(&path));
                    }
                    self.w
                        .stampable
                        .entry(st.st_dev)
                        .or_insert_with(|| stamps_trustworthy(sub.as_fd()));
                    self.tree
                        .entries
                        .push(entry(rel.clone(), EntryKind::Dir, mode, None));
                    self.dir(sub.as_fd(), &rel)?;
                }
                FileType::Symlink => {
                    let target = readlinkat(dir, name, Vec::new()).map_err(|e| {
                        RegistryError::io(format!("readlink {}", path.display()), e.into())
                    })?;
                    let Ok(t) = target.into_string() else {
                        (self.warn)(format!(
                            "skipping symlink {} with a non-UTF-8 target",
                            path.display()
                        ));
                        continue;
                    };
                    self.tree
                        .entries
                        .push(entry(rel, EntryKind::Symlink, 0o777, Some(t)));
                }
                FileType::RegularFile => {
                    let file = SourceFile::new(
                        self.root.clone(),
                        rel.clone(),
                        path.clone(),
                        (st.st_dev, st.st_ino),
                    );
                    self.w.todo.push(PendingFile {
                        index: self.tree.entries.len(),
                        file: Arc::new(file),
                        key: path.to_string_lossy().into_owned(),
                        st: Stamp::of_stat(&st),
                    });
                    self.tree
                        .entries
                        .push(entry(rel, EntryKind::File, mode, None));
                }
                _ => (self.warn)(format!("skipping special file {}", path.display())),
            }
        }
        Ok(())
    }
}

/// The names in `dir` but `.` and `..`, read through a fresh handle
/// (`dir`'s own position is left alone) with one 64 KiB buffer: a large
/// directory takes a few `getdents` calls, not one per few dozen entries.
fn list(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let fd = openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut entries = RawDir::new(fd, buf.spare_capacity_mut());
    let mut names = Vec::new();
    while let Some(e) = entries.next() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// `statat` (not following links) of each of `names` in `dir`, in order.
/// A large directory is stat'ed on a few threads at once: its stats are
/// most of the walk of an unchanged directory.
fn stat_all(dir: BorrowedFd<'_>, names: &[Vec<u8>]) -> Vec<rustix::io::Result<Stat>> {
    /// Fewest names per thread, and most threads.
    const PER_THREAD: usize = 256;
    const THREADS: usize = 4;
    let stat = |n: &Vec<u8>| statat(dir, OsStr::from_bytes(n), AtFlags::SYMLINK_NOFOLLOW);
    let threads = (names.len() / PER_THREAD).clamp(1, THREADS);
    if threads == 1 {
        return names.iter().map(stat).collect();
    }
    let per = names.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut parts = names.chunks(per);
        let first = parts.next().unwrap_or_default();
        let rest: Vec<_> = parts
            .map(|part| s.spawn(move || part.iter().map(stat).collect::<Vec<_>>()))
            .collect();
        let mut out: Vec<_> = first.iter().map(stat).collect();
        for h in rest {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

/// The error for an entry replaced between its stat and its open.
pub(crate) fn replaced(path: &Path) -> RegistryError {
    RegistryError::io(
        format!("opening {}", path.display()),
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "replaced while being snapshotted (changed since it was listed); push again",
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_large_directory_is_listed_sorted_with_every_entrys_own_stat() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("w");
        std::fs::create_dir(&root).unwrap();
        // Enough names for several stat threads, created out of order.
        let n = 1100;
        for i in (0..n).rev() {
            let p = root.join(format!("f{i:04}"));
            match i % 10 {
                3 => std::os::unix::fs::symlink(format!("t{i}"), &p).unwrap(),
                7 => {
                    std::fs::create_dir(&p).unwrap();
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
                }
                _ => {
                    std::fs::write(&p, vec![1u8; i]).unwrap();
                    std::fs::set_permissions(
                        &p,
                        std::fs::Permissions::from_mode(0o600 + i as u32 % 2 * 0o44),
                    )
                    .unwrap();
                }
            }
        }
        let mut tree = FsTree::default();
        let walked = walk(&root, &mut tree, &mut |w| panic!("{w}")).unwrap();
        let paths: Vec<&str> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("f{i:04}")).collect();
        assert_eq!(paths, want);
        let mut files = walked.todo.iter();
        for (i, e) in tree.entries.iter().enumerate() {
            match i % 10 {
                3 => {
                    assert_eq!(e.kind, EntryKind::Symlink);
                    assert_eq!(e.target.as_deref(), Some(format!("t{i}").as_str()));
                }
                7 => assert_eq!((e.kind, e.mode), (EntryKind::Dir, 0o750)),
                _ => {
                    assert_eq!(e.kind, EntryKind::File);
                    assert_eq!(e.mode, 0o600 + i as u32 % 2 * 0o44);
                    let f = files.next().unwrap();
                    assert_eq!((f.index, f.st.size), (i, i as u64));
                }
            }
        }
        assert!(files.next().is_none());
    }
}
