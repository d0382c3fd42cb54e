//! The key methods of [`Transport`] for the lifecycle commands (list, read,
//! write, delete keys of the layout), under the same rules as the rest of
//! the backend: no symlink is followed, only regular files are read, writes
//! are temp + fsync + rename.

use std::fs;
use std::io;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use pf_registry_core::lifecycle::StoredKey;
use pf_registry_core::{layout, KeyStore, RegistryError, Result};

use super::{blocking, io_err, read_bounded, FileTransport};

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

#[async_trait]
impl KeyStore for FileTransport {
    async fn list_keys(&self, dir: &str) -> Result<Vec<StoredKey>> {
        layout::check_key(dir)?;
        let root = self.root.clone();
        let dir = dir.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root.join(&dir), &dir, &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn read_key(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        layout::check_key(key)?;
        let path = self.root.join(key);
        blocking(move || Ok(read_bounded(&path, limit)?.map(Bytes::from))).await
    }

    async fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()> {
        layout::check_key(key)?;
        let this = self.clone();
        let path = self.root.join(key);
        let bytes = bytes.to_vec();
        // Markers only: visible at once, no need to survive a crash.
        blocking(move || this.replace(&path, &bytes, false)).await
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        layout::check_key(key)?;
        let path = self.root.join(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RegistryError::io(format!("removing {}", path.display()), e)),
        })
        .await
    }
}
