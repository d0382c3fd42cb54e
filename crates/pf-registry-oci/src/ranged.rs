//! Ranged blob reads: `GET /v2/<repo>/blobs/<encoded digest>` with
//! `Range: bytes=a-b`, through the raw -> encoded digest mapping the
//! manifest gave. A registry that ignores `Range` and answers 200 with the
//! whole blob still works: the range is skipped to and taken from the
//! body, memory bounded by the range ([`ranges::from_http`]).

use bytes::Bytes;
use pf_digest::Digest;
use pf_registry_core::{ranges, RegistryError, Result, Transport};
use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::Method;

use crate::{OciTransport, NO_BODY};

impl OciTransport {
    /// See [`pf_registry_core::Transport::get_blob_range`].
    pub(crate) async fn blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        let end = ranges::check(digest, offset, len)?;
        let b = self.lookup(digest).ok_or_else(|| {
            RegistryError::not_found(format!("blob {digest} in {}", self.location()))
        })?;
        // The manifest names the encoded size: refuse a range past it
        // before asking (the answer is checked as well).
        if end > b.encoded_size {
            return Err(ranges::past_end(digest, offset, len, Some(b.encoded_size)));
        }
        let mut h = HeaderMap::new();
        h.insert(
            RANGE,
            HeaderValue::from_str(&ranges::header_value(offset, len))
                .map_err(|e| RegistryError::invalid("range header", e.to_string()))?,
        );
        let resp = self
            .client
            .send(
                Method::GET,
                &format!("/v2/{}/blobs/{}", self.repo, b.encoded),
                &self.pull_scope(),
                h,
                NO_BODY,
            )
            .await?;
        ranges::from_http(resp, self.location(), digest, offset, len).await
    }
}
