//! Blob uploads to an OCI registry: the POST that opens an upload session,
//! monolithic PUTs for blobs in memory or up to [`MONOLITHIC_LIMIT`](crate::MONOLITHIC_LIMIT),
//! and chunked PATCH uploads streamed from the spool file for larger ones
//! (memory per upload is one read buffer, not a chunk).

use bytes::Bytes;
use pf_digest::Digest;
use pf_registry_core::{EncodedBlob, RegistryError, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::Method;

use crate::{client, headers, OciTransport, CHUNK_SIZE, NO_BODY, STREAM_CHUNK};

impl OciTransport {
    pub(crate) async fn start_upload(&self) -> Result<String> {
        let resp = self
            .client
            .send(
                Method::POST,
                &format!("/v2/{}/blobs/uploads/", self.repo),
                &self.push_scope(),
                headers(&[(CONTENT_LENGTH, "0".into())]),
                NO_BODY,
            )
            .await?;
        location(&resp)
    }

    /// Uploads bytes already in memory unless the registry has them.
    pub(crate) async fn put_bytes(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        if self.blob_exists(digest).await? {
            return Ok(());
        }
        self.upload_bytes(digest, bytes).await
    }

    /// POST + PUT of bytes in memory (the registry deduplicates by digest).
    pub(crate) async fn upload_bytes(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        let body = move || Some(reqwest::Body::from(bytes.clone()));
        self.upload_monolithic(digest, len, &body).await
    }

    /// POST + one PUT whose body is streamed from `body` (`len` bytes).
    pub(crate) async fn upload_monolithic(
        &self,
        digest: &Digest,
        len: u64,
        body: client::BodyFn<'_>,
    ) -> Result<()> {
        let loc = self.start_upload().await?;
        let url = with_digest(&loc, digest);
        self.client
            .send(
                Method::PUT,
                &url,
                &self.push_scope(),
                headers(&[
                    (CONTENT_TYPE, "application/octet-stream".into()),
                    (CONTENT_LENGTH, len.to_string()),
                ]),
                body,
            )
            .await?;
        Ok(())
    }

    /// Chunked upload: PATCH `CHUNK_SIZE` pieces, then PUT with the digest.
    /// Each PATCH body is streamed from the spool file (memory per upload is
    /// one small read buffer, not a chunk).
    pub(crate) async fn put_chunked(&self, blob: &EncodedBlob, encoded: &Digest) -> Result<()> {
        let Some(path) = blob.spool_path() else {
            // In-memory blobs are small; one PUT.
            let b = blob
                .read_all()
                .map_err(|e| RegistryError::io("reading blob", e))?;
            return self.upload_bytes(encoded, b).await;
        };
        let mut loc = self.start_upload().await?;
        let mut offset = 0u64;
        while offset < blob.encoded_size {
            let len = (CHUNK_SIZE as u64).min(blob.encoded_size - offset);
            let end = offset + len - 1;
            let body = || Some(file_range_body(path.to_path_buf(), offset, len));
            let resp = self
                .client
                .send(
                    Method::PATCH,
                    &loc,
                    &self.push_scope(),
                    headers(&[
                        (CONTENT_TYPE, "application/octet-stream".into()),
                        (CONTENT_RANGE, format!("{offset}-{end}")),
                        (CONTENT_LENGTH, len.to_string()),
                    ]),
                    &body,
                )
                .await?;
            loc = location(&resp)?;
            offset = end + 1;
        }
        self.client
            .send(
                Method::PUT,
                &with_digest(&loc, encoded),
                &self.push_scope(),
                headers(&[(CONTENT_LENGTH, "0".into())]),
                NO_BODY,
            )
            .await?;
        Ok(())
    }
}

fn location(resp: &reqwest::Response) -> Result<String> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::invalid("OCI upload", "response has no Location header"))?;
    let url = resp
        .url()
        .join(loc)
        .map_err(|e| RegistryError::invalid("OCI upload Location", e.to_string()))?;
    Ok(url.to_string())
}

/// A request body streaming `len` bytes of `path` from `offset`.
fn file_range_body(path: std::path::PathBuf, offset: u64, len: u64) -> reqwest::Body {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let open = async move {
        let mut f = tokio::fs::File::open(&path).await?;
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
            f.take(len),
            STREAM_CHUNK,
        ))
    };
    reqwest::Body::wrap_stream(futures::TryFutureExt::try_flatten_stream(open))
}

fn with_digest(loc: &str, d: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}
