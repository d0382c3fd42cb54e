//! Helpers for the S3 tests: configs and references for a moto server.

use std::sync::Arc;

use pf_registry_cloud::s3::{self, S3Transport};
use pf_registry_core::{Config, Engine, ImageRef};
use pf_testsupport::S3Server;

/// A Config pointing the S3 backend at `server` with `key`/`secret`.
pub fn config_with(server: &S3Server, key: &str, secret: &str) -> Config {
    let mut c = Config::default();
    c.options
        .insert("s3.endpoint".into(), server.endpoint.clone());
    c.options.insert("s3.region".into(), server.region.clone());
    c.options.insert("s3.access_key_id".into(), key.into());
    c.options
        .insert("s3.secret_access_key".into(), secret.into());
    c
}

/// A Config with the server's own test credentials.
pub fn config(server: &S3Server) -> Config {
    config_with(server, &server.access_key, &server.secret_key)
}

/// `s3://<bucket>/<path>` parsed.
pub fn s3_ref(server: &S3Server, path: &str) -> ImageRef {
    ImageRef::parse(&format!("s3://{}/{path}", server.bucket)).expect("s3 ref parses")
}

/// Opens the engine for `r` on `server`.
pub fn engine(r: &ImageRef, c: &Config) -> Engine<S3Transport> {
    s3::open(r, c).unwrap_or_else(|e| panic!("open {r}: {e}"))
}

/// A raw object_store client on the server's bucket, for layout checks.
pub fn raw_store(server: &S3Server) -> Arc<object_store::aws::AmazonS3> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&server.bucket)
            .with_endpoint(&server.endpoint)
            .with_region(&server.region)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_allow_http(true)
            .build()
            .expect("raw client"),
    )
}

/// Every key in the bucket, sorted.
pub async fn all_keys(server: &S3Server) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let store = raw_store(server);
    let mut keys: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list bucket");
    keys.sort();
    keys
}
