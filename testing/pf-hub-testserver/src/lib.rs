#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod history;
mod lfs;
mod routes;
mod storage;
mod util;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use auth::Token;
pub use storage::RepoType;

/// The user behind [`HubConfig::with_token`].
pub const DEFAULT_USER: &str = "pf-tester";

/// Server configuration.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Accepted tokens (none: everything is anonymous).
    pub tokens: Vec<Token>,
    /// Tree and commit listings page size (the Hub uses 1000, 50 with
    /// `expand`); small by default so pagination is exercised.
    pub page_size: usize,
    /// Files larger than this are `lfs` in preupload answers, and regular
    /// (base64) files larger than this are rejected by commits (Hub: 10 MiB).
    pub lfs_threshold: u64,
    /// Port of the hub origin on 127.0.0.1 (0: pick a free one).
    pub port: u16,
    /// Most file operations in one commit (the Hub recommends about 100 per
    /// commit; more fail with `400`). Default 100.
    pub commit_file_limit: usize,
    /// Most entries in one folder of a revision's tree (Hub: 10,000); a
    /// commit going over fails with `400`.
    pub folder_entry_limit: usize,
    /// Rate limit on the hub origin: at most `n` requests per `window`;
    /// more get `429` with `Retry-After` (seconds). `None`: unlimited.
    pub rate_limit: Option<(u64, std::time::Duration)>,
    /// Objects larger than this get the `multipart` transfer (parts of this
    /// size) when the client offers it in `transfers`. `None`: basic only.
    pub multipart_chunk: Option<u64>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            tokens: Vec::new(),
            page_size: 50,
            lfs_threshold: 10 << 20,
            port: 0,
            commit_file_limit: 100,
            folder_entry_limit: 10_000,
            rate_limit: None,
            multipart_chunk: None,
        }
    }
}

impl HubConfig {
    /// One write token for [`DEFAULT_USER`].
    pub fn with_token(secret: impl Into<String>) -> Self {
        HubConfig::default().token(Token::write(secret, DEFAULT_USER))
    }
    /// Adds a token.
    pub fn token(mut self, t: Token) -> Self {
        self.tokens.push(t);
        self
    }
    /// Sets the listing page size (at least 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }
    /// Sets the regular/LFS size threshold.
    pub fn lfs_threshold(mut self, bytes: u64) -> Self {
        self.lfs_threshold = bytes;
        self
    }
    /// Sets the most file operations per commit (at least 1).
    pub fn commit_file_limit(mut self, n: usize) -> Self {
        self.commit_file_limit = n.max(1);
        self
    }
    /// Sets the most entries per folder (at least 1).
    pub fn folder_entry_limit(mut self, n: usize) -> Self {
        self.folder_entry_limit = n.max(1);
        self
    }
    /// Allows at most `n` hub-origin requests per `window` (429 beyond).
    pub fn rate_limit(mut self, n: u64, window: std::time::Duration) -> Self {
        self.rate_limit = Some((n.max(1), window));
        self
    }
    /// Offers the `multipart` transfer for objects over `chunk` bytes.
    pub fn multipart_chunk(mut self, chunk: u64) -> Self {
        self.multipart_chunk = Some(chunk.max(1));
        self
    }
    /// Sets the hub port (0: random).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

/// Request counters. Route names: `whoami`, `repo.create`, `repo.info`,
/// `preupload`, `commit`, `tree`, `refs`, `branch.create`, `tag.create`,
/// `lfs.batch`, `lfs.verify`, `resolve` (hub origin), `lfs.upload`,
/// `lfs.part`, `lfs.complete`, `lfs.download` (storage origin), `unknown`,
/// and `rate_limited` (429 answers).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// All requests on both origins.
    pub requests: u64,
    /// Requests per route, whatever their outcome.
    pub routes: BTreeMap<String, u64>,
    /// LFS objects stored (successful, verified uploads).
    pub lfs_uploads: u64,
    /// Bytes of those objects.
    pub lfs_bytes: u64,
    /// Commits created through the commit endpoint.
    pub commits: u64,
    /// Tree listing pages served.
    pub tree_pages: u64,
}

impl Stats {
    /// Requests seen on `route`.
    pub fn route(&self, route: &str) -> u64 {
        self.routes.get(route).copied().unwrap_or(0)
    }
}

pub(crate) type RepoMap = HashMap<(RepoType, String), storage::Repo>;

/// State shared by both origins.
pub(crate) struct Shared {
    cfg: HubConfig,
    hub_url: String,
    storage_url: String,
    repos: Mutex<RepoMap>,
    objects: lfs::ObjectStore,
    stats: Mutex<Stats>,
    seq: AtomicU64,
    /// Start of the current rate-limit window and requests seen in it.
    window: Mutex<(std::time::Instant, u64)>,
}

impl Shared {
    fn repos(&self) -> MutexGuard<'_, RepoMap> {
        self.repos.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn count(&self, route: &str) {
        let mut s = self.stats();
        s.requests += 1;
        *s.routes.entry(route.to_string()).or_insert(0) += 1;
    }
    /// `Some(seconds to wait)` when this request goes over the rate limit.
    fn over_rate_limit(&self) -> Option<u64> {
        let (n, window) = self.cfg.rate_limit?;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(w.0) >= window {
            *w = (now, 0);
        }
        w.1 += 1;
        (w.1 > n).then(|| {
            let left = window.saturating_sub(now.duration_since(w.0));
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
    }
    fn count_upload(&self, bytes: u64) {
        let mut s = self.stats();
        s.lfs_uploads += 1;
        s.lfs_bytes += bytes;
    }
}

/// A running server (both origins); stops when dropped, closing every
/// connection (kept-alive ones included).
pub struct HubServer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl HubServer {
    /// Starts both origins on 127.0.0.1, served by tasks on the current tokio
    /// runtime: drive blocking clients (subprocesses, sync HTTP) from
    /// `spawn_blocking` or a multi-thread runtime.
    pub async fn start(config: HubConfig) -> io::Result<HubServer> {
        let hub = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let storage = TcpListener::bind(("127.0.0.1", 0)).await?;
        let shared = Arc::new(Shared {
            hub_url: format!("http://{}", hub.local_addr()?),
            storage_url: format!("http://{}", storage.local_addr()?),
            cfg: config,
            repos: Mutex::new(HashMap::new()),
            objects: lfs::ObjectStore::new()?,
            stats: Mutex::new(Stats::default()),
            seq: AtomicU64::new(1),
            window: Mutex::new((std::time::Instant::now(), 0)),
        });
        let tasks = vec![
            tokio::spawn(serve(hub, routes::hub_router(shared.clone()))),
            tokio::spawn(serve(storage, routes::storage_router(shared.clone()))),
        ];
        Ok(HubServer { shared, tasks })
    }

    /// Base URL of the hub origin (use as `HF_ENDPOINT`), no trailing slash.
    pub fn url(&self) -> &str {
        &self.shared.hub_url
    }

    /// Base URL of the storage origin (LFS uploads and downloads).
    pub fn storage_url(&self) -> &str {
        &self.shared.storage_url
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats().clone()
    }

    /// Resets the request counters.
    pub fn reset_stats(&self) {
        *self.shared.stats() = Stats::default();
    }

    /// The commit id `rev` (branch, tag or commit) resolves to in a repo.
    pub fn resolve(&self, kind: RepoType, repo_id: &str, rev: &str) -> Option<String> {
        let repos = self.shared.repos();
        let repo = repos.get(&(kind, repo_id.to_string()))?;
        Some(repo.commits.get(repo.resolve(rev)?)?.id.clone())
    }

    /// The LFS bytes a repository stores: objects some commit a branch or
    /// tag reaches still names (a super-squash releases the others).
    pub fn lfs_bytes(&self, kind: RepoType, repo_id: &str) -> Option<u64> {
        let repos = self.shared.repos();
        Some(repos.get(&(kind, repo_id.to_string()))?.lfs.values().sum())
    }

    /// How many commits the history of `rev` holds.
    pub fn history_len(&self, kind: RepoType, repo_id: &str, rev: &str) -> Option<usize> {
        let repos = self.shared.repos();
        let repo = repos.get(&(kind, repo_id.to_string()))?;
        Some(repo.ancestry(repo.resolve(rev)?).len())
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts HTTP/1.1 connections until aborted; aborting drops the JoinSet,
/// which aborts every connection task.
async fn serve(listener: TcpListener, app: axum::Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(sock);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
