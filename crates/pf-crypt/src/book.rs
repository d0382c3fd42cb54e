//! The pusher's data keys, one per destination, and where the last
//! encrypted push's pack seals are (the next push's dedup base).
//!
//! Kept in one JSON file in the local store (`crypt-keys.json`, mode
//! 0600, written atomically): the data key is as secret as the identity,
//! and as local as the plaintext the store already caches.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use pf_cas::BlobStore;
use pf_digest::Digest;
use serde::{Deserialize, Serialize};

use crate::image::{recorded_seals, PackSeal};
use crate::keys::DataKey;
use crate::{CryptError, Result};

/// Largest key book read.
const MAX_BOOK: u64 = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The data key, hex.
    key: String,
    /// Plaintext index blob of the last push, in the local store.
    index: Option<Digest>,
}

/// Data keys and last indexes per destination. Debug output is redacted.
#[derive(Default, Serialize, Deserialize)]
pub struct KeyBook {
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for KeyBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBook")
            .field("destinations", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl KeyBook {
    /// Loads the book at `path`; a missing one is empty. A damaged one is
    /// an error (starting afresh would silently change a destination's
    /// key and lose its dedup).
    pub fn load(path: &Path) -> Result<KeyBook> {
        use std::io::Read;
        let io = |e| CryptError::io(format!("reading {}", path.display()), e);
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyBook::default()),
            Err(e) => return Err(io(e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_BOOK).read_to_end(&mut bytes).map_err(io)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CryptError::Malformed(format!("{}: {e}", path.display())))
    }

    /// Writes the book atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| CryptError::io(format!("writing {}", path.display()), e);
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The data key of `destination`, if one was recorded.
    pub fn key(&self, destination: &str) -> Option<DataKey> {
        let e = self.entries.get(destination)?;
        let v = hex::decode(&e.key).ok()?;
        Some(DataKey(v.try_into().ok()?))
    }

    /// Records `key` for `destination` (keeping its last index if the key
    /// is unchanged).
    pub fn set_key(&mut self, destination: &str, key: &DataKey) {
        let hex_key = hex::encode(key.0);
        let e = self.entries.entry(destination.into()).or_insert(Entry {
            key: hex_key.clone(),
            index: None,
        });
        if e.key != hex_key {
            e.key = hex_key;
            e.index = None;
        }
    }

    /// Records that the image whose plaintext index is `index` was pushed
    /// to `destination`.
    pub fn record(&mut self, destination: &str, index: Digest) {
        if let Some(e) = self.entries.get_mut(destination) {
            e.index = Some(index);
        }
    }

    /// The pack seals of the last push to `destination`, read from
    /// `store`; empty if unknown or gone.
    pub fn seals(&self, store: &dyn BlobStore, destination: &str) -> Vec<PackSeal> {
        self.entries
            .get(destination)
            .and_then(|e| e.index.as_ref())
            .and_then(|i| recorded_seals(store, i))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_persist_per_destination_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crypt-keys.json");
        let mut book = KeyBook::load(&path).unwrap();
        assert!(book.key("file:///a").is_none());
        let k = DataKey::generate().unwrap();
        book.set_key("file:///a", &k);
        book.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = KeyBook::load(&path).unwrap();
        assert_eq!(back.key("file:///a"), Some(k));
        assert!(back.key("file:///b").is_none());
        assert!(!format!("{back:?}").contains("key\""));
        std::fs::write(&path, b"{damaged").unwrap();
        assert!(KeyBook::load(&path).is_err());
    }
}
