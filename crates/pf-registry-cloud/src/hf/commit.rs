//! Repository set-up and commits under the Hub's rules.
//!
//! - An existing repository is used as is: its info is read first and
//!   `repos/create` is called only on 404, so a fine-grained token that may
//!   write the repository but not create repositories works. A created Space
//!   gets an `sdk` (`hf.space_sdk`).
//! - Blobs go in commits of at most `hf.commit_files` files (default 100);
//!   the manifest and its signature go in the LAST commit, so a reader sees
//!   the new `manifest.json` only once every blob it names is committed.
//! - Every commit names its `parentCommit`: the revision's head read when
//!   the push began, then the commit before it, so the Hub applies it only
//!   on the tree the push last saw (`huggingface_hub`'s `parent_commit`:
//!   "the commit will fail if `revision` does not point to
//!   `parent_commit`"). When someone else committed meanwhile (a gc, a
//!   marker, another push; the Hub answers 412), the push re-reads the
//!   head and commits again on it, at most [`PARENT_RETRIES`] times with
//!   backoff, after re-checking there what the commit relies on: the
//!   manifest commit needs every blob of the closure in the tree at its
//!   parent. One that is gone (a gc that started before the push's marker
//!   deleted it) ends the commit with `NotFound`, on which the engine
//!   uploads what is missing and commits again. Like every backend, a
//!   push does not compare the reference it moves: two pushes to one
//!   revision both land and the later `manifest.json` wins (the earlier
//!   manifest stays under `manifests/`, and in the git history). A 412
//!   whose head did not move, or a head that keeps moving, is `Conflict`.
//! - A blob uploaded again AFTER the manifest commit (the engine's settle
//!   step, when a running gc removed it) is committed at once on the
//!   current head: the tree must hold it, not only LFS storage.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pf_registry_core::{layout, CommitRequest, RegistryError, Result};
use reqwest::Method;
use serde_json::{json, Value};

use std::collections::HashSet;
use std::time::Duration;

use pf_digest::Digest;
use pf_registry_core::RetryPolicy;

use super::config::LFS_BATCH_OBJECTS;
use super::transport::HfTransport;
use super::upload::Pending;

/// Commits again on a moved head at most this many times.
pub(super) const PARENT_RETRIES: u32 = 10;

/// Backoff between those attempts (with jitter, so racing pushes spread).
const PARENT_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: PARENT_RETRIES + 1,
    initial_delay: Duration::from_millis(40),
    max_delay: Duration::from_secs(2),
};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HfTransport {
    /// Makes sure the repository exists (without `repos/create` when it
    /// does) and records the revision's head as the first `parentCommit`.
    pub(super) async fn ensure_repo(&self) -> Result<()> {
        self.need_token()?;
        self.repo_ready
            .get_or_try_init(|| async {
                if self.head().await?.is_none() {
                    self.create_repo().await?;
                    self.head().await?;
                }
                Ok::<_, RegistryError>(())
            })
            .await
            .map(|_| ())
    }

    /// Reads the repository's info at the revision; `None` if the repository
    /// does not exist. Records the head commit as the parent.
    async fn head(&self) -> Result<Option<()>> {
        let url = self.api(&format!("/revision/{}", self.rev_enc()));
        match self.send(self.req(Method::GET, &url), "repo info").await {
            Ok(resp) => {
                let v: Value = resp
                    .json()
                    .await
                    .map_err(|e| RegistryError::invalid("repo info", e.to_string()))?;
                *lock(&self.parent) = v["sha"].as_str().map(str::to_string);
                Ok(Some(()))
            }
            Err(RegistryError::NotFound { .. }) => {
                // The revision may be missing in an existing repository.
                let repo = self.api("");
                match self.send(self.req(Method::GET, &repo), "repo info").await {
                    Ok(_) => Ok(Some(())),
                    Err(RegistryError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn create_repo(&self) -> Result<()> {
        let (org, name) = self.repo_id.split_once('/').unwrap_or(("", &self.repo_id));
        let mut body = json!({"name": name, "organization": org, "type": self.repo_type,
            "private": !self.public,
            "visibility": if self.public { "public" } else { "private" }});
        if self.repo_type == "space" {
            body["sdk"] = json!(self.space_sdk);
        }
        let create = self
            .req(Method::POST, &format!("{}/api/repos/create", self.endpoint))
            .json(&body);
        match self.send(create, "create repo").await {
            // 409: created meanwhile by someone else.
            Ok(_) | Err(RegistryError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Queues a blob for its LFS batch; uploads a full batch at once.
    pub(super) async fn enqueue(&self, p: Pending) -> Result<()> {
        let full = {
            let mut q = lock(&self.pending);
            if !q.iter().any(|x| x.oid == p.oid) {
                q.push(p);
            }
            (q.len() >= LFS_BATCH_OBJECTS).then(|| q.drain(..LFS_BATCH_OBJECTS).collect())
        };
        match full {
            Some(batch) => self.upload_batch(batch).await,
            None => Ok(()),
        }
    }

    /// Uploads every queued blob, [`LFS_BATCH_OBJECTS`] per batch call.
    pub(super) async fn flush_pending(&self) -> Result<()> {
        loop {
            let batch: Vec<Pending> = {
                let mut q = lock(&self.pending);
                let n = q.len().min(LFS_BATCH_OBJECTS);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            self.upload_batch(batch).await?;
        }
    }

    /// One batch; on failure the blobs go back in the queue so a retry
    /// (of this blob's upload or of the commit) sends them again.
    async fn upload_batch(&self, batch: Vec<Pending>) -> Result<()> {
        let res = self.lfs_batch(&batch).await;
        if res.is_err() {
            lock(&self.pending).extend(batch);
        }
        res
    }

    /// The push's commits: blob commits of at most `commit_files` files,
    /// then the manifest and signature files. Returns `hf://repo@<commit>`.
    pub(super) async fn commit_push(&self, req: &CommitRequest<'_>) -> Result<String> {
        let d = req.manifest_digest;
        let present = lock(&self.present).clone().unwrap_or_default();
        let mut blob_lines = Vec::new();
        for b in req.blobs {
            if let (Some(u), false) = (&b.uploaded, present.contains(&b.digest)) {
                let oid = u.require_encoded_digest()?;
                let line = json!({"key": "lfsFile", "value": {
                    "path": layout::blob(&b.digest), "algo": "sha256",
                    "oid": oid.hex(), "size": u.encoded_size,
                }});
                blob_lines.push((b.digest, line));
            }
        }
        let total = blob_lines.len().div_ceil(self.commit_files);
        let mut moved = false;
        for (i, chunk) in blob_lines.chunks(self.commit_files).enumerate() {
            let lines: Vec<Value> = chunk.iter().map(|(_, l)| l.clone()).collect();
            let summary = format!("pf push {}: blobs {}/{total}", d.short(), i + 1);
            moved |= self.post_commit(&summary, &lines, &[]).await?.1;
            // A retried push commit skips what is already committed.
            if let Some(p) = lock(&self.present).as_mut() {
                p.extend(chunk.iter().map(|(d, _)| *d));
            }
        }
        let file = |path: String, content: &[u8]| json!({"key": "file", "value": {"path": path, "content": STANDARD.encode(content), "encoding": "base64"}});
        let mut lines = vec![file(layout::manifest_by_digest(&d), req.manifest)];
        if let Some(sig) = req.signature {
            lines.push(file(layout::signature_by_digest(&d), sig));
            lines.push(file(layout::SIGNATURE.into(), sig));
        }
        // An older manifest.json.sig may stay after an unsigned push; readers
        // use it only when its envelope names the manifest they fetched.
        lines.push(file(layout::MANIFEST.into(), req.manifest));
        let needs: Vec<Digest> = req.blobs.iter().map(|b| b.digest).collect();
        // A blob commit that moved onto a new head skipped the check (it
        // adds files only); the manifest commit must not.
        let head = lock(&self.parent).clone();
        if let (true, Some(head)) = (moved, head) {
            self.check_blobs(&head, &needs).await?;
        }
        let (oid, _) = self
            .post_commit(&format!("pf push {d}"), &lines, &needs)
            .await?;
        self.committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(format!("hf://{}{}@{oid}", self.url_prefix(), self.repo_id))
    }

    /// One NDJSON commit on the revision with `parentCommit`; returns and
    /// records the new commit id, and whether it moved onto a new head: when
    /// the head moved meanwhile, re-reads it, checks that every blob of
    /// `needs` is in its tree (`NotFound` naming one that is not) and
    /// commits again on it (see the module doc).
    async fn post_commit(
        &self,
        summary: &str,
        files: &[Value],
        needs: &[Digest],
    ) -> Result<(String, bool)> {
        let (mut attempt, mut moved_on) = (0, false);
        loop {
            let parent = lock(&self.parent).clone();
            let err = match self.commit_lines(summary, files, parent.as_deref()).await {
                Ok(oid) => {
                    *lock(&self.parent) = Some(oid.clone());
                    return Ok((oid, moved_on));
                }
                Err(RegistryError::Conflict(m)) => m,
                Err(e) => return Err(e),
            };
            attempt += 1;
            let moved = |detail: &str| {
                RegistryError::Conflict(format!(
                    "hf://{}{}@{} {detail}: {err}",
                    self.url_prefix(),
                    self.repo_id,
                    self.revision
                ))
            };
            if attempt > PARENT_RETRIES {
                return Err(moved(&format!(
                    "kept moving during the push ({PARENT_RETRIES} commits again on a new head)"
                )));
            }
            tokio::time::sleep(PARENT_BACKOFF.delay(attempt, None)).await;
            self.head().await?;
            let head = lock(&self.parent).clone();
            let Some(head) = head.filter(|h| parent.as_ref() != Some(h)) else {
                return Err(moved("refused the commit although its head did not move"));
            };
            tracing::debug!(attempt, %head, "hf: head moved during the push; committing on it");
            moved_on = true;
            self.check_blobs(&head, needs).await?;
        }
    }

    /// `NotFound` naming a blob of `needs` that the tree of commit `head`
    /// lacks; records that tree's blobs as present.
    async fn check_blobs(&self, head: &str, needs: &[Digest]) -> Result<()> {
        if needs.is_empty() {
            return Ok(());
        }
        let present = self.blobs_at(head).await?;
        let gone = needs.iter().find(|d| !present.contains(d)).copied();
        *lock(&self.present) = Some(present);
        match gone {
            Some(d) => Err(RegistryError::not_found(format!(
                "blob {d} in hf://{}{}@{head} (removed while the push ran; it is uploaded again)",
                self.url_prefix(),
                self.repo_id
            ))),
            None => Ok(()),
        }
    }

    /// Every blob in the tree of commit `rev`.
    async fn blobs_at(&self, rev: &str) -> Result<HashSet<Digest>> {
        Ok(self
            .tree_items_at(rev, "blobs?recursive=true")
            .await?
            .iter()
            .filter_map(|it| it["path"].as_str().and_then(layout::blob_digest))
            .collect())
    }

    /// One NDJSON commit of `files` (operation lines) on the revision,
    /// naming `parent` as `parentCommit` when given (without one the Hub
    /// applies the operations on its current head); returns the commit id.
    pub(super) async fn commit_lines(
        &self,
        summary: &str,
        files: &[Value],
        parent: Option<&str>,
    ) -> Result<String> {
        let mut header = json!({
            "summary": summary,
            "description": "ProcessFork snapshot pushed by pf-registry",
        });
        if let Some(p) = parent {
            header["parentCommit"] = json!(p);
        }
        let mut body = json!({"key": "header", "value": header}).to_string();
        body.push('\n');
        for l in files {
            body.push_str(&l.to_string());
            body.push('\n');
        }
        let url = self.api(&format!("/commit/{}", self.rev_enc()));
        let resp = self
            .send(
                self.req(Method::POST, &url)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body),
                "commit",
            )
            .await?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RegistryError::invalid("commit response", e.to_string()))?;
        v["commitOid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RegistryError::invalid("commit response", "no commitOid"))
    }
}
