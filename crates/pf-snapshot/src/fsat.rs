//! Filesystem access relative to directory handles, never through a
//! symlink: the directories pf reads and writes are written by an untrusted
//! agent at the same time, so a path checked a moment ago may be a symlink
//! now. Every open below a root goes through [`open_beneath`].

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{openat, openat2, Mode, OFlags, ResolveFlags};

/// Whether the kernel has `openat2`: 0 not known yet, 1 yes, 2 no.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Opens `rel` (a relative `/`-separated path, `""` for `root` itself)
/// beneath directory `root`, following no symlink anywhere on the way and
/// never leaving `root` (`..` is refused). Uses `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it, else
/// one `openat(O_NOFOLLOW)` per component. `O_NOFOLLOW` and `O_CLOEXEC`
/// are always added to `flags`.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let path = if rel.is_empty() { "." } else { rel };
    if OPENAT2.load(Ordering::Relaxed) != 2 {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match openat2(root, path, flags, mode, resolve) {
            Err(rustix::io::Errno::NOSYS) => OPENAT2.store(2, Ordering::Relaxed),
            // Kernels before 5.6 behind seccomp filters may say EPERM.
            Err(rustix::io::Errno::PERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                OPENAT2.store(2, Ordering::Relaxed)
            }
            r => {
                OPENAT2.store(1, Ordering::Relaxed);
                return r.map_err(io::Error::from);
            }
        }
    }
    open_beneath_by_component(root, rel, flags, mode)
}

/// The fallback of [`open_beneath`]: each directory on the way is opened
/// with `O_PATH | O_DIRECTORY | O_NOFOLLOW` from the previous one.
pub(crate) fn open_beneath_by_component(
    root: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let comps: Vec<&str> = rel
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(io::Error::from(rustix::io::Errno::XDEV));
    }
    let Some((last, dirs)) = comps.split_last() else {
        return Ok(openat(root, ".", flags, mode)?);
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        let next = openat(
            at,
            *d,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(root, |f| f.as_fd());
    Ok(openat(at, *last, flags, mode)?)
}

/// Opens directory `path` (trusted: given by the caller) as a handle.
pub(crate) fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(openat(
        rustix::fs::CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_anywhere_on_the_way_are_refused_by_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/ok"), "ok").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("d/f")).unwrap();
        let root = open_dir(dir.path()).unwrap();
        for open in [open_beneath, open_beneath_by_component] {
            let ro = OFlags::RDONLY;
            assert!(open(root.as_fd(), "d/ok", ro, Mode::empty()).is_ok());
            assert!(open(root.as_fd(), "", ro, Mode::empty()).is_ok());
            for bad in ["link/secret", "d/f", "link", "d/../link/secret", "../x"] {
                assert!(
                    open(root.as_fd(), bad, ro, Mode::empty()).is_err(),
                    "{bad} must not open"
                );
            }
        }
    }
}
