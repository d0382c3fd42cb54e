//! [`KeyStore`] under a retry policy, for backends whose key operations
//! are single requests that nothing else retries (object_store's S3 client
//! is configured to retry nothing; the Hub and Kubo clients are pf's own).
//! The engine does not retry key operations (push markers, gc), so a
//! backend implements [`KeyAttempts`] (one attempt each) and gets
//! [`KeyStore`], every operation run under [`KeyAttempts::key_retry`].

use async_trait::async_trait;
use bytes::Bytes;

use super::StoredKey;
use crate::progress::NoProgress;
use crate::retry::RetryPolicy;
use crate::transport::KeyStore;
use crate::Result;

/// One attempt at each key operation, with [`KeyStore`]'s meaning. Each
/// must be idempotent: a retried write writes the same bytes again, a
/// retried delete deletes what is already gone.
#[async_trait]
pub trait KeyAttempts: Send + Sync {
    /// The policy every operation runs under.
    fn key_retry(&self) -> &RetryPolicy;

    /// Whether [`delete_keys_once`](Self::delete_keys_once) deletes many
    /// keys in one request (a Hub commit; the default): then a batch is
    /// retried whole; otherwise keys are deleted and retried one by one,
    /// 8 at a time.
    fn deletes_in_one_request(&self) -> bool {
        true
    }

    /// [`KeyStore::list_keys`], once.
    async fn list_keys_once(&self, dir: &str) -> Result<Vec<StoredKey>>;

    /// [`KeyStore::read_key`], once.
    async fn read_key_once(&self, key: &str, limit: u64) -> Result<Option<Bytes>>;

    /// [`KeyStore::write_key`], once.
    async fn write_key_once(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// [`KeyStore::delete_keys`], once.
    async fn delete_keys_once(&self, keys: &[String]) -> Result<()>;
}

#[async_trait]
impl<T: KeyAttempts> KeyStore for T {
    async fn list_keys(&self, dir: &str) -> Result<Vec<StoredKey>> {
        self.key_retry()
            .run("list keys", &NoProgress, || self.list_keys_once(dir))
            .await
    }

    async fn read_key(&self, key: &str, limit: u64) -> Result<Option<Bytes>> {
        self.key_retry()
            .run("read key", &NoProgress, || self.read_key_once(key, limit))
            .await
    }

    async fn write_key(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.key_retry()
            .run("write key", &NoProgress, || self.write_key_once(key, bytes))
            .await
    }

    async fn delete_key(&self, key: &str) -> Result<()> {
        let one = [key.to_string()];
        self.key_retry()
            .run("delete key", &NoProgress, || self.delete_keys_once(&one))
            .await
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        if self.deletes_in_one_request() {
            return self
                .key_retry()
                .run("delete keys", &NoProgress, || self.delete_keys_once(keys))
                .await;
        }
        crate::transport::delete_each(self, keys).await
    }
}
