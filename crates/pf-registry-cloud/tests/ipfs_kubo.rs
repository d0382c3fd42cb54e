//! What only a real Kubo node shows: base32 CIDv1 roots, pulls through the
//! trustless HTTP gateway with no RPC access, and many pushes of
//! overlapping content racing on one node's MFS.
#![cfg(feature = "ipfs")]

use std::sync::Arc;

use pf_cas::{BlobStore, MemoryStore};
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{layout, RegistryError, Verification};
use pf_registry_core::{Config, ImageRef, Registry, SignedImage, SigningKey, TrustPolicy};
use pf_testsupport::{Fault, FaultProxy, IpfsServer};

fn api_config(node: &IpfsServer) -> Config {
    let mut c = Config::default();
    c.options.insert("ipfs.api".into(), node.api.clone());
    c
}

fn push_ref() -> ImageRef {
    ImageRef::parse("ipfs://").expect("ref")
}

/// Pushes `signed` (blobs in `src`) to the node `config` reaches; its
/// `ipfs://<root>`.
async fn push(config: &Config, src: &Arc<MemoryStore>, signed: &SignedImage) -> String {
    pf_registry_cloud::ipfs::open(&push_ref(), config)
        .expect("open")
        .push(src.clone(), signed)
        .await
        .expect("push")
        .resolved
}

/// A config that can only reach the node's gateway: the RPC API points at a
/// closed port.
fn gateway_only(node: &IpfsServer, key: &SigningKey) -> Config {
    let mut c = Config::default();
    let closed = pf_testsupport::free_port();
    c.options
        .insert("ipfs.api".into(), format!("http://127.0.0.1:{closed}"));
    c.options
        .insert("ipfs.gateway".into(), node.gateway.clone());
    c.trust = TrustPolicy::new(vec![key.public_key()]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_through_the_trustless_gateway_alone_verifies_signature_and_blobs() {
    let node = IpfsServer::start();
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let mut spec = ImageSpec::sample(71, 6);
    // A multi-leaf file: Kubo splits it into 256 KiB raw leaves under a dag-pb root.
    spec.layers.push(
        (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    let img = spec.build(&*src, "gateway");
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let resolved = push(&api_config(&node), &src, &signed).await;
    assert!(
        resolved.starts_with("ipfs://bafy"),
        "a base32 CIDv1 dag-pb root: {}",
        resolved
    );

    let r = ImageRef::parse(&resolved).expect("resolved ref");
    let e = pf_registry_cloud::ipfs::open(&r, &gateway_only(&node, &key)).expect("open");
    assert!(e.exists().await.expect("exists through the gateway"));
    let dst = Arc::new(MemoryStore::new());
    let pulled = e.pull(dst.clone()).await.expect("pull through the gateway");
    assert_eq!(pulled.manifest, img.manifest);
    assert!(matches!(pulled.verification, Verification::Verified { .. }));
    assert_eq!(pulled.blobs_fetched as usize, img.closure.len());
    for d in &img.closure {
        assert!(
            src.get(d).expect("source") == dst.get(d).expect("pulled"),
            "{d}"
        );
    }

    // The RPC API really is out of reach for that config: a push fails.
    let err = pf_registry_cloud::ipfs::open(&push_ref(), &gateway_only(&node, &key))
        .expect("open")
        .push(src.clone(), &signed)
        .await
        .expect_err("push without RPC access");
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");

    // A CID the gateway does not have is NotFound or a transport error
    // (the offline node cannot fetch it), never an image.
    let absent = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    let e = pf_registry_cloud::ipfs::open(
        &ImageRef::parse(absent).expect("ref"),
        &gateway_only(&node, &key),
    )
    .expect("open");
    assert!(e.pull(Arc::new(MemoryStore::new())).await.is_err());
}

/// 200 pushes in rounds of 20 concurrent ones; in each round five images
/// share their file blobs (new ones every round), so pushers race to add
/// and index the same blobs in MFS ("directory already has entry by that
/// name" must count as success when the entry holds the same CID).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_concurrent_pushes_of_overlapping_content_all_succeed() {
    const ROUNDS: u64 = 10;
    const PER_ROUND: usize = 20;
    const VARIANTS: usize = 5;
    let node = IpfsServer::start();
    let config = api_config(&node);
    let mut ok = 0;
    for round in 0..ROUNDS {
        let src = Arc::new(MemoryStore::new());
        let base = ImageSpec::sample(1000 + round, 4);
        let images: Vec<_> = (0..VARIANTS)
            .map(|v| {
                let mut spec = base.clone();
                spec.layers[1] = format!("variant {v} of round {round}").into_bytes();
                spec.build(&*src, &format!("race-{round}-{v}"))
            })
            .collect();
        let pushes = (0..PER_ROUND).map(|i| {
            let (src, config) = (src.clone(), config.clone());
            let manifest = images[i % VARIANTS].manifest.clone();
            tokio::spawn(async move {
                let signed = SignedImage::new(&manifest, None);
                pf_registry_cloud::ipfs::open(&push_ref(), &config)
                    .expect("open")
                    .push(src, &signed)
                    .await
            })
        });
        let results = futures::future::join_all(pushes).await;
        let mut roots = vec![None; VARIANTS];
        for (i, r) in results.into_iter().enumerate() {
            let rep = r
                .expect("push task")
                .unwrap_or_else(|e| panic!("round {round} push {i}: {e}"));
            let root = roots[i % VARIANTS].get_or_insert_with(|| rep.resolved.clone());
            assert_eq!(*root, rep.resolved, "one image, one root CID");
            ok += 1;
        }
        for (v, root) in roots.iter().enumerate() {
            let root = root.as_ref().expect("pushed");
            let dst = Arc::new(MemoryStore::new());
            let pulled =
                pf_registry_cloud::ipfs::open(&ImageRef::parse(root).expect("ref"), &config)
                    .expect("open")
                    .pull(dst.clone())
                    .await
                    .unwrap_or_else(|e| panic!("pull {root}: {e}"));
            assert_eq!(pulled.manifest, images[v].manifest);
        }
        // Every image pushed so far has its record in the node's index.
        let t = pf_registry_cloud::ipfs::IpfsTransport::new(&push_ref(), &config).expect("t");
        let keys = pf_registry_core::KeyStore::list_keys(&t, layout::MANIFESTS)
            .await
            .expect("list manifests");
        for img in &images {
            let d = SignedImage::new(&img.manifest, None).digest();
            let key = layout::manifest_by_digest(&d);
            assert!(
                keys.iter().any(|k| k.key == key),
                "round {round}: no record {key} among {} records",
                keys.len()
            );
        }
    }
    assert_eq!(ok, 200);
}

/// Status line and headers, and body length, of the gateway's answer for
/// one raw block (read over a plain TCP connection).
fn raw_block_answer(gateway: &str, cid: &str) -> (usize, usize) {
    use std::io::{Read, Write};
    let addr = gateway.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    write!(
        s,
        "GET /ipfs/{cid}?format=raw HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.ipld.raw\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("answer");
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers")
        + 4;
    (head, all.len() - head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_block_that_does_not_match_its_cid_is_an_integrity_error() {
    let node = IpfsServer::start();
    let key = SigningKey::generate().expect("keygen");
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(72, 3).build(&*src, "tamper");
    let signed = SignedImage::new(&img.manifest, Some(&key));
    let resolved = push(&api_config(&node), &src, &signed).await;
    let root = resolved.trim_start_matches("ipfs://").to_string();
    // The pull's first request is the root directory block: flip a byte in
    // the middle of its body on the first connection through the proxy.
    let (head, body) = raw_block_answer(&node.gateway, &root);
    assert!(body > 60, "root block of {body} bytes");
    let proxy = FaultProxy::start(
        node.gateway.trim_start_matches("http://"),
        vec![Fault::FlipAt(head + body / 2)],
    );
    let mut c = gateway_only(&node, &key);
    c.options
        .insert("ipfs.gateway".into(), format!("http://{}", proxy.addr));
    let e =
        pf_registry_cloud::ipfs::open(&ImageRef::parse(&resolved).expect("ref"), &c).expect("open");
    let dst = Arc::new(MemoryStore::new());
    let err = e.pull(dst.clone()).await.expect_err("a tampered block");
    assert_eq!(proxy.injected(), 1, "the flip was applied");
    match &err {
        RegistryError::Integrity { what, .. } => {
            assert!(what.contains(&format!("ipfs block {root}")), "{what}")
        }
        other => panic!("expected Integrity, got {other}"),
    }
    assert!(dst.list().expect("list").is_empty(), "nothing was stored");
}

/// `rm ipfs://<root>` unpins the image's root and drops the node's record
/// of the image; a second `rm` (not pinned any more) and a digest the root
/// does not hold are `NotFound`; `gc` of one root says it is not supported.
/// `gc ipfs://` (the node's index) then keeps the image's index entries
/// while they are younger than the grace period (their recorded index
/// times) and deletes them all without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rm_unpins_the_root() {
    use pf_registry_core::lifecycle;
    let node = IpfsServer::start();
    let cfg = api_config(&node);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(91, 3).build(&*src, "rm");
    let signed = SignedImage::new(&img.manifest, None);
    let resolved = push(&cfg, &src, &signed).await;
    let root = resolved.trim_start_matches("ipfs://").to_string();
    let pinned = |root: String, node: &IpfsServer| {
        let api = node.api.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{api}/api/v0/pin/ls"))
                .query(&[
                    ("arg", format!("/ipfs/{root}")),
                    ("type", "recursive".into()),
                ])
                .send()
                .await
                .expect("pin/ls");
            resp.status().is_success()
        }
    };
    assert!(pinned(root.clone(), &node).await, "a push pins its root");
    let r = ImageRef::parse(&resolved).expect("ref");
    let t = pf_registry_cloud::ipfs::IpfsTransport::new(&r, &cfg).expect("transport");
    let wrong = lifecycle::rm(&t, None, Some(pf_digest::Digest::of(b"other"))).await;
    assert!(
        matches!(wrong, Err(RegistryError::NotFound { .. })),
        "{wrong:?}"
    );
    assert!(pinned(root.clone(), &node).await, "a refused rm unpinned");
    let rep = lifecycle::rm(&t, None, None).await.expect("rm");
    assert_eq!(rep.manifests, vec![signed.digest()]);
    assert!(!pinned(root.clone(), &node).await, "still pinned after rm");
    let again = lifecycle::rm(&t, None, None).await;
    assert!(
        matches!(again, Err(RegistryError::NotFound { .. })),
        "{again:?}"
    );
    let gc = lifecycle::gc(&t, &lifecycle::GcOptions::default()).await;
    assert!(
        matches!(gc, Err(RegistryError::NotSupported { .. })),
        "{gc:?}"
    );

    let index = pf_registry_cloud::ipfs::IpfsTransport::new(&push_ref(), &cfg).expect("index");
    let inv = lifecycle::Inventory::read(&index).await.expect("inventory");
    assert!(inv.manifests.is_empty() && inv.tags.is_empty(), "{inv:?}");
    let young = lifecycle::gc(&index, &lifecycle::GcOptions::default())
        .await
        .expect("gc with the default grace");
    assert!(young.deleted.is_empty(), "{young:?}");
    assert_eq!(young.kept_young, img.closure.len());
    let no_grace = lifecycle::GcOptions {
        grace: std::time::Duration::ZERO,
        ..lifecycle::GcOptions::default()
    };
    let g = lifecycle::gc(&index, &no_grace).await.expect("gc");
    let mut deleted = g.deleted.clone();
    deleted.sort();
    let mut closure = img.closure.clone();
    closure.sort();
    assert_eq!(deleted, closure, "every index entry of the removed image");
    let left = pf_registry_core::Transport::list_keys(&index, pf_registry_core::layout::BLOBS)
        .await
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    // The entries' time siblings went with them.
    for d in &img.closure {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v0/files/ls", node.api))
            .query(&[("arg", format!("/pf-registry/blobs/sha256/{}", d.shard()))])
            .send()
            .await
            .expect("files/ls")
            .json()
            .await
            .expect("json");
        let names = v["Entries"].as_array().cloned().unwrap_or_default();
        assert!(names.is_empty(), "left in the shard of {d}: {names:?}");
    }
}

/// Ranged reads through the trustless gateway alone (the conformance case
/// runs them over the RPC API): blocks fetched and checked against their
/// CIDs, the range taken from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranged_reads_through_the_gateway() {
    let node = IpfsServer::start();
    let key = SigningKey::generate().expect("keygen");
    let push = pf_registry_cloud::ipfs::open(&push_ref(), &api_config(&node)).expect("open");
    let (digest, resolved) = pf_registry_conformance::ranged::push(&push, 0x1f5).await;
    let r = ImageRef::parse(&resolved).expect("resolved ref");
    let t = pf_registry_cloud::ipfs::IpfsTransport::new(&r, &gateway_only(&node, &key))
        .expect("transport");
    pf_registry_conformance::ranged::check(&t, &digest).await;
}

/// A TCP relay to `upstream` counting the `GET /ipfs/` requests crossing it.
fn counting_relay(upstream: &str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = listener.local_addr().expect("addr").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let (c2, up) = (count.clone(), upstream.to_string());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (c3, up) = (c2.clone(), up.clone());
            std::thread::spawn(move || {
                let Ok(server) = std::net::TcpStream::connect(&up) else {
                    return;
                };
                let (mut from_client, mut to_server) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = from_client.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let seen = buf[..n].windows(10).filter(|w| w == b"GET /ipfs/").count();
                    c3.fetch_add(seen, Ordering::SeqCst);
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, count)
}

/// Through the gateway, a range in the last leaf of a three-leaf file
/// fetches the file's root node and that leaf only (the root's
/// `blocksizes` skip the others); the whole file needs all four blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_range_fetches_only_the_blocks_that_hold_it() {
    use std::sync::atomic::Ordering;
    let node = IpfsServer::start();
    let key = SigningKey::generate().expect("keygen");
    let push = pf_registry_cloud::ipfs::open(&push_ref(), &api_config(&node)).expect("open");
    let (digest, resolved) = pf_registry_conformance::ranged::push(&push, 0x1f6).await;
    let (relay, gets) = counting_relay(node.gateway.trim_start_matches("http://"));
    let mut c = gateway_only(&node, &key);
    c.options
        .insert("ipfs.gateway".into(), format!("http://{relay}"));
    let r = ImageRef::parse(&resolved).expect("resolved ref");
    let t = pf_registry_cloud::ipfs::IpfsTransport::new(&r, &c).expect("transport");
    use pf_registry_core::Transport;
    // The stored blob: 600 KiB incompressible, so three 256 KiB-or-less leaves.
    let n = pf_registry_conformance::ranged::encoded(&t, &digest)
        .await
        .len() as u64;
    assert!(n > 512 << 10 && n <= 768 << 10, "{n}");
    let before = gets.load(Ordering::SeqCst);
    t.get_blob_range(&digest, n - 100, 100)
        .await
        .expect("tail range");
    assert_eq!(
        gets.load(Ordering::SeqCst) - before,
        2,
        "root node + last leaf"
    );
    let before = gets.load(Ordering::SeqCst);
    t.get_blob_range(&digest, 0, n).await.expect("whole range");
    assert_eq!(
        gets.load(Ordering::SeqCst) - before,
        4,
        "root node + three leaves"
    );
}

/// An index pull (`ipfs://`, `ipfs://@sha256:...`) reads a blob whose
/// index entry is gone (MFS lost it, or something deleted it) from the
/// image's pinned root.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_pull_reads_blobs_gone_from_the_index_from_the_pinned_root() {
    let node = IpfsServer::start();
    let cfg = api_config(&node);
    let src = Arc::new(MemoryStore::new());
    let img = ImageSpec::sample(93, 4).build(&*src, "index-pull");
    let signed = SignedImage::new(&img.manifest, None);
    push(&cfg, &src, &signed).await;
    let rm = reqwest::Client::new()
        .post(format!("{}/api/v0/files/rm", node.api))
        .query(&[("arg", "/pf-registry/blobs"), ("recursive", "true")])
        .send()
        .await
        .expect("files/rm");
    assert!(rm.status().is_success(), "files/rm: {}", rm.status());
    for r in [
        "ipfs://".to_string(),
        format!("ipfs://@{}", signed.digest()),
    ] {
        let dst = Arc::new(MemoryStore::new());
        let pulled = pf_registry_cloud::ipfs::open(&ImageRef::parse(&r).expect("ref"), &cfg)
            .expect("open")
            .pull(dst.clone())
            .await
            .unwrap_or_else(|e| panic!("pull {r}: {e}"));
        assert_eq!(pulled.manifest, img.manifest, "{r}");
        for l in &img.manifest.layers {
            assert!(
                dst.has(&l.digest).expect("has"),
                "{r}: {} missing",
                l.digest
            );
        }
    }
}
