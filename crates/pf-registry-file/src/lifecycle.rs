//! The key methods of [`Transport`] for the lifecycle commands (list, read,
//! write, delete keys of the layout), under the same rules as the rest of
//! the backend: no symlink is followed, only regular files are read, writes
//! are temp + fsync + rename.

use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;
use pf_registry_core::lifecycle::StoredKey;
use pf_registry_core::{RegistryError, Result};

use super::{blocking, io_err, read_bounded, FileTransport};

/// Checks that `key` is a relative layout key: `/`-separated normal
/// components, no `.`/`..`, not empty.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            format!("key {key:?}"),
            "not a repository key",
        ))
    }
}

/// Walks `dir` (relative `rel`) depth-first, never following links.
fn walk(dir: &Path, rel: &str, out: &mut Vec<StoredKey>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RegistryError::io(format!("listing {}", dir.display()), e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not a key pf writes
        };
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RegistryError::io(format!("stat {name}"), e)),
        };
        let key = format!("{rel}/{name}");
        if meta.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if meta.is_file() {
            out.push(StoredKey {
                key,
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        }
    }
    Ok(())
}

impl FileTransport {
    pub(crate) async fn list_keys_impl(&self, dir: &str) -> Result<Vec<StoredKey>> {
        check_key(dir)?;
        let root = self.root.clone();
        let dir = dir.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root.join(&dir), &dir, &mut out)?;
            Ok(out)
        })
        .await
    }

    pub(crate) async fn read_key_impl(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        check_key(key)?;
        let path = self.root.join(key);
        blocking(move || Ok(read_bounded(&path, limit)?.map(Bytes::from))).await
    }

    pub(crate) async fn write_key_impl(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key(key)?;
        let this = self.clone();
        let path = self.root.join(key);
        let bytes = bytes.to_vec();
        blocking(move || this.write_atomic(&path, &bytes)).await
    }

    pub(crate) async fn delete_key_impl(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let path = self.root.join(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RegistryError::io(format!("removing {}", path.display()), e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn keys_must_be_plain_relative_paths() {
        for ok in ["manifest.json", "blobs/sha256", "tags/v1/manifest.json"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
