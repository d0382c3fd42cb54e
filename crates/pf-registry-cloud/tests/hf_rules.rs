//! The Hub's rules, against the Hub test server enforcing them: LFS batches
//! of up to 256 objects, commits of at most `hf.commit_files` files with the
//! manifest in the last one, `parentCommit` (a stale parent is a
//! `Conflict`), existing repositories used without `repos/create`, `sdk`
//! for Spaces, the `multipart` transfer, and 429 rate limiting.
#![cfg(feature = "hf")]

use std::sync::Arc;
use std::time::Duration;

use pf_cas::MemoryStore;
use pf_hub_testserver::{HubConfig, HubServer};
use pf_registry_cloud::hf::HfTransport;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{layout, CommitRequest, Config, ImageRef, Registry, SignedImage, Transport};

const TOKEN: &str = "hf_rules_token_abc";

fn config_for(hub: &HubServer) -> Config {
    let mut c = Config::default();
    c.options
        .insert("hf.endpoint".into(), hub.url().to_string());
    c.options.insert("hf.token".into(), TOKEN.into());
    c
}

/// An image of `n` small files, each its own blob.
fn many_blobs(seed: u64, n: usize) -> ImageSpec {
    let mut spec = ImageSpec::sample(seed, 0);
    spec.files = (0..n)
        .map(|i| {
            let body = format!("file {i} of image {seed}: {}", "x".repeat(i % 17));
            (format!("d{}/f{i}.txt", i % 7), body.into_bytes())
        })
        .collect();
    spec.pack_max = 0;
    spec
}

/// Adds `PF_HF_BIG_MIB` MiB (default 0) of random 64 MiB files to `spec`:
/// the issue's 2 GiB figure is checked with `PF_HF_BIG_MIB=2048`. The
/// files are cut into chunks of about 4 MiB (the largest `ImageSpec`
/// allows), each its own blob like the small files: at the default 1 KiB,
/// 2 GiB made two million blobs, and the push never finished.
fn with_big_files(mut spec: ImageSpec) -> ImageSpec {
    let mib: usize = std::env::var("PF_HF_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if mib > 0 {
        spec.chunk_size = 4 << 20;
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, start) in (0..mib).step_by(64).enumerate() {
        let len = (mib - start).min(64) << 20;
        let body: Vec<u8> = (0..len / 8)
            .flat_map(|_| {
                // xorshift64: incompressible, deterministic.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        spec.files.push((format!("big/f{i}.bin"), body));
    }
    spec
}

async fn push(hub: &HubServer, cfg: &Config, r: &str, spec: &ImageSpec) -> (usize, String) {
    let (n, resolved, _) = push_image(hub, cfg, r, spec).await;
    (n, resolved)
}

async fn push_image(
    hub: &HubServer,
    cfg: &Config,
    r: &str,
    spec: &ImageSpec,
) -> (usize, String, pf_registry_core::Manifest) {
    let src = Arc::new(MemoryStore::new());
    let img = spec.build(&*src, "hf-rules");
    let r = ImageRef::parse(r).unwrap();
    let rep = pf_registry_cloud::hf::open(&r, cfg)
        .unwrap()
        .push(src, &SignedImage::new(&img.manifest, None))
        .await
        .unwrap_or_else(|e| panic!("push to {}: {e}", hub.url()));
    (img.closure.len(), rep.resolved, img.manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_blobs_use_few_commits_and_full_lfs_batches() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN).page_size(1000))
        .await
        .unwrap();
    let cfg = config_for(&hub);
    let (blobs, resolved, manifest) = push_image(
        &hub,
        &cfg,
        "hf://pf-tester/many",
        &with_big_files(many_blobs(1, 600)),
    )
    .await;
    let s = hub.stats();
    // Files: every blob, manifest by digest and manifest.json.
    let files = blobs + 2;
    // Hub API requests (what its rate limit counts): all but the storage origin's.
    let storage: u64 = ["lfs.upload", "lfs.part", "lfs.complete", "lfs.download"]
        .iter()
        .map(|r| s.route(r))
        .sum();
    eprintln!(
        "{blobs} blobs, {} bytes uploaded: {} commits, {} LFS batch calls, {} uploads, \
         {} Hub API requests ({} with the storage origin's)",
        s.lfs_bytes,
        s.commits,
        s.route("lfs.batch"),
        s.lfs_uploads,
        s.requests - storage,
        s.requests
    );
    assert!(blobs > 512, "the image must need several batches: {blobs}");
    assert_eq!(s.lfs_uploads, blobs as u64);
    assert!(
        // +2: the push marker's write and removal.
        s.commits as usize <= files.div_ceil(100) + 3,
        "{} commits",
        s.commits
    );
    assert!(
        s.route("lfs.batch") as usize <= blobs.div_ceil(256),
        "{} batch calls for {blobs} blobs",
        s.route("lfs.batch")
    );
    assert_eq!(s.route("repo.create"), 1);
    // The manifest is in the push's last commit (only the push marker's
    // removal follows it): the returned commit and the head both pull it.
    let head = hub
        .resolve(pf_hub_testserver::RepoType::Model, "pf-tester/many", "main")
        .unwrap();
    assert!(
        !resolved.ends_with(&head),
        "the marker's removal is the head"
    );
    for r in [resolved.clone(), format!("hf://pf-tester/many@{head}")] {
        let pulled = pf_registry_cloud::hf::open(&ImageRef::parse(&r).unwrap(), &cfg)
            .unwrap()
            .pull(Arc::new(MemoryStore::new()))
            .await
            .expect("pull");
        assert_eq!(pulled.manifest, manifest);
    }

    // A second push to the existing repository never calls repos/create.
    hub.reset_stats();
    push(&hub, &cfg, "hf://pf-tester/many", &many_blobs(2, 20)).await;
    assert_eq!(hub.stats().route("repo.create"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_file_option_splits_commits_and_server_limit_holds() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN).commit_file_limit(10))
        .await
        .unwrap();
    let mut cfg = config_for(&hub);
    cfg.options.insert("hf.commit_files".into(), "10".into());
    let (blobs, _) = push(&hub, &cfg, "hf://pf-tester/small", &many_blobs(3, 35)).await;
    // + the manifest commit and the push marker's write and removal.
    assert_eq!(hub.stats().commits as usize, blobs.div_ceil(10) + 3);

    // With the default 100 files per commit the server's limit of 10 refuses.
    let src = Arc::new(MemoryStore::new());
    let img = many_blobs(4, 35).build(&*src, "x");
    let err = pf_registry_cloud::hf::open(
        &ImageRef::parse("hf://pf-tester/refused").unwrap(),
        &config_for(&hub),
    )
    .unwrap()
    .push(src, &SignedImage::new(&img.manifest, None))
    .await
    .expect_err("a commit over the server's file limit must fail");
    assert!(err.to_string().contains("Too many files"), "{err}");
}

/// A commit whose parent moved (the Hub's 412) is made again on the new
/// head, as `huggingface_hub` users re-read and retry: the push lands and
/// the commit made meanwhile stays (its manifest by digest, and in history).
#[tokio::test(flavor = "multi_thread")]
async fn stale_parent_commit_lands_on_the_new_head() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN))
        .await
        .unwrap();
    let cfg = config_for(&hub);
    push(&hub, &cfg, "hf://pf-tester/race", &many_blobs(5, 3)).await;
    // A writer that read the head ...
    let r = ImageRef::parse("hf://pf-tester/race").unwrap();
    let slow = HfTransport::new(&r, &cfg).unwrap();
    slow.missing(&[]).await.expect("reads the head");
    // ... while another push commits.
    let src = Arc::new(MemoryStore::new());
    let other = many_blobs(6, 3).build(&*src, "other");
    let other = SignedImage::new(&other.manifest, None);
    pf_registry_cloud::hf::open(&r, &cfg)
        .unwrap()
        .push(src, &other)
        .await
        .expect("push meanwhile");
    let commits = hub.stats().commits;
    let manifest = br#"{"not":"read by the server"}"#;
    let resolved = slow
        .commit(CommitRequest {
            manifest,
            manifest_digest: pf_digest::Digest::of(manifest),
            signature: None,
            blobs: &[],
        })
        .await
        .expect("a stale parent commits again on the new head");
    assert_eq!(
        hub.stats().commits,
        commits + 1,
        "one commit landed after the refused one"
    );
    let head = resolved.rsplit('@').next().unwrap_or_default();
    assert_eq!(
        hub.resolve(pf_hub_testserver::RepoType::Model, "pf-tester/race", "main")
            .as_deref(),
        Some(head)
    );
    let kept = HfTransport::new(&r, &cfg)
        .unwrap()
        .read_key(&layout::manifest_by_digest(&other.digest()), 1 << 20)
        .await
        .expect("read");
    assert_eq!(kept.as_deref(), Some(&other.manifest[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn spaces_get_an_sdk() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN))
        .await
        .unwrap();
    let cfg = config_for(&hub);
    push(&hub, &cfg, "hf://spaces/pf-tester/space", &many_blobs(7, 2)).await;
    assert!(hub
        .resolve(
            pf_hub_testserver::RepoType::Space,
            "pf-tester/space",
            "main"
        )
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn large_blobs_use_multipart_when_offered() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN).multipart_chunk(32 * 1024))
        .await
        .unwrap();
    let cfg = config_for(&hub);
    // Two incompressible 100 KB layers: 4 parts each.
    let mut spec = ImageSpec::sample(8, 2);
    spec.layers = (0..2)
        .map(|i| pf_testsupport::noise(100_000, 0x9e37_79b9_7f4a_7c15 + i))
        .collect();
    let (_, resolved) = push(&hub, &cfg, "hf://pf-tester/mp", &spec).await;
    let s = hub.stats();
    assert!(s.route("lfs.complete") > 0, "{s:?}");
    assert!(s.route("lfs.part") > s.route("lfs.complete"), "{s:?}");
    pf_registry_cloud::hf::open(&ImageRef::parse(&resolved).unwrap(), &cfg)
        .unwrap()
        .pull(Arc::new(MemoryStore::new()))
        .await
        .expect("pull what multipart uploaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_push_waits_and_succeeds() {
    let hub = HubServer::start(HubConfig::with_token(TOKEN).rate_limit(40, Duration::from_secs(1)))
        .await
        .unwrap();
    let cfg = config_for(&hub);
    push(&hub, &cfg, "hf://pf-tester/slow", &many_blobs(9, 60)).await;
    assert!(
        hub.stats().route("rate_limited") > 0,
        "the limit was never hit"
    );
}
