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
use rustix::fs::{fstat, openat, readlinkat, statat, AtFlags, FileType, Mode, OFlags};

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
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(dir).map_err(listing)? {
            let name = e.map_err(listing)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let name = OsStr::from_bytes(&name);
            let path = shown_dir.join(name);
            let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| RegistryError::io(format!("stat {}", path.display()), e.into()))?;
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
