//! Where a push seals into: sealed blobs held in memory up to a byte
//! budget, the rest written to a store.
//!
//! A sealed pack is written once and read once (by the upload that
//! follows), so staging it on disk costs a write and a read of every
//! sealed byte plus a re-hash by the upload (a disk copy can change behind
//! the store's back, so it is never vouched for). A blob held here was
//! hashed from these very bytes, which nothing can change: the upload
//! reads it without hashing it again ([`BlobStore::open_vouched`]).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use pf_cas::BlobStore;
use pf_digest::Digest;

/// A store that keeps what is put into it in memory while the total stays
/// within a budget and writes the rest to `spill`.
pub struct Staging {
    mem: RwLock<HashMap<Digest, Arc<[u8]>>>,
    used: Mutex<u64>,
    budget: u64,
    spill: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// Holds up to `budget` bytes in memory in front of `spill`.
    pub fn new(spill: Arc<dyn BlobStore>, budget: u64) -> Staging {
        Staging {
            mem: RwLock::new(HashMap::new()),
            used: Mutex::new(0),
            budget,
            spill,
        }
    }

    /// Bytes held in memory.
    pub fn held(&self) -> u64 {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes blob `digest` to the spill store if it is held in memory
    /// (for what must outlive the process, such as the plaintext index
    /// the key book names).
    pub fn persist(&self, digest: &Digest) -> pf_cas::Result<()> {
        let held = self.mem_get(digest);
        if let Some(b) = held {
            self.spill.put(&b)?;
        }
        Ok(())
    }

    fn mem_get(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        self.mem
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }
}

impl Staging {
    /// Stores `bytes`, whose digest the caller just computed from them, as
    /// [`BlobStore::put`] does without hashing them again.
    pub(crate) fn put_known(&self, digest: Digest, bytes: &[u8]) -> pf_cas::Result<()> {
        if self.mem_get(&digest).is_some() {
            return Ok(());
        }
        let n = bytes.len() as u64;
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if *used + n > self.budget {
            drop(used);
            self.spill.put(bytes)?;
            return Ok(());
        }
        *used += n;
        drop(used);
        let mut mem = self.mem.write().unwrap_or_else(PoisonError::into_inner);
        if mem.insert(digest, Arc::from(bytes)).is_some() {
            drop(mem);
            *self.used.lock().unwrap_or_else(PoisonError::into_inner) -= n;
        }
        Ok(())
    }
}

impl BlobStore for Staging {
    fn has(&self, digest: &Digest) -> pf_cas::Result<bool> {
        Ok(self.mem_get(digest).is_some() || self.spill.has(digest)?)
    }
    fn size(&self, digest: &Digest) -> pf_cas::Result<Option<u64>> {
        match self.mem_get(digest) {
            Some(b) => Ok(Some(b.len() as u64)),
            None => self.spill.size(digest),
        }
    }
    fn open(&self, digest: &Digest) -> pf_cas::Result<Box<dyn Read + Send>> {
        Ok(self.open_vouched(digest)?.0)
    }
    /// Vouches for blobs held in memory: they were hashed from these bytes
    /// when put, and are immutable since.
    fn open_vouched(&self, digest: &Digest) -> pf_cas::Result<(Box<dyn Read + Send>, bool)> {
        match self.mem_get(digest) {
            Some(b) => Ok((Box::new(std::io::Cursor::new(b)), true)),
            None => self.spill.open_vouched(digest),
        }
    }
    fn has_intact(&self, digest: &Digest, size: Option<u64>) -> pf_cas::Result<bool> {
        match self.mem_get(digest) {
            Some(b) => Ok(size.is_none_or(|n| n == b.len() as u64)),
            None => self.spill.has_intact(digest, size),
        }
    }
    fn put(&self, bytes: &[u8]) -> pf_cas::Result<Digest> {
        let d = Digest::of(bytes);
        self.put_known(d, bytes)?;
        Ok(d)
    }
    fn list(&self) -> pf_cas::Result<Vec<Digest>> {
        Ok(listed(self.spill.list()?, &self.mem))
    }
    pf_cas::forward_to!(spill: put_stream, put_stream_as, get_named, put_named);
}

/// `listed` and the keys of `more`, sorted, once each.
pub(crate) fn listed<V>(mut listed: Vec<Digest>, more: &RwLock<HashMap<Digest, V>>) -> Vec<Digest> {
    listed.extend(
        more.read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied(),
    );
    listed.sort();
    listed.dedup();
    listed
}

#[cfg(test)]
mod tests {
    use super::*;
    use pf_cas::MemoryStore;

    #[test]
    fn holds_within_the_budget_vouches_for_it_and_spills_the_rest() {
        let spill = Arc::new(MemoryStore::new());
        let s = Staging::new(spill.clone(), 10);
        let a = s.put(b"0123456").unwrap();
        let b = s.put(b"abcdef").unwrap();
        assert_eq!(s.held(), 7);
        assert!(!spill.has(&a).unwrap(), "held in memory");
        assert!(spill.has(&b).unwrap(), "over the budget: spilled");
        let (mut r, vouched) = s.open_vouched(&a).unwrap();
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!((v.as_slice(), vouched), (&b"0123456"[..], true));
        assert!(
            !s.open_vouched(&b).unwrap().1,
            "a spilled blob is not vouched for"
        );
        assert_eq!(s.get(&b).unwrap(), b"abcdef");
        assert_eq!(s.list().unwrap().len(), 2);
        // Equal puts are held once; persist writes a held blob through.
        s.put(b"0123456").unwrap();
        assert_eq!(s.held(), 7);
        s.persist(&a).unwrap();
        assert_eq!(spill.get(&a).unwrap(), b"0123456");
    }
}
