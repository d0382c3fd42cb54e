//! Ranged blob reads on registries beyond the conformance targets:
//! distribution v3, and a registry that ignores `Range` (a relay in front
//! of docker-registry renames the request header, so the registry answers
//! 200 with the whole blob and the client must skip to the range).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pf_registry_conformance::ranged;
use pf_registry_core::{Config, ImageRef};
use pf_registry_oci::OciTransport;
use pf_testsupport::{Distribution, OciAuth, OciRegistry, ServerProcess};

/// Pushes the ranged-reads image to `host` and checks ranges through a
/// transport on `read_host` (the same registry, maybe behind a relay).
async fn push_and_check(host: &str, read_host: &str, repo: &str) {
    let cfg = Config::default();
    let push_ref = ImageRef::parse(&format!("oci://{host}/{repo}:v1")).expect("ref");
    let engine = pf_registry_oci::open(&push_ref, &cfg).expect("open");
    let (digest, _) = ranged::push(&engine, 0x0c1).await;
    let read_ref = ImageRef::parse(&format!("oci://{read_host}/{repo}:v1")).expect("ref");
    let t = OciTransport::new(&read_ref, &cfg).expect("transport");
    ranged::check(&t, &digest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_reads_on_distribution_v3() {
    let reg = OciRegistry::start_distribution(Distribution::V3);
    push_and_check(&reg.host, &reg.host, "ranges/v3").await;
    assert!(
        reg.count_requests("GET", "/blobs/sha256:") > 0,
        "blob GETs reached the registry"
    );
}

/// A TCP relay to `upstream` that renames every `range:` request header to
/// `x-rng:` (same length); counts the renames. Stops when dropped.
struct RangeDropper {
    addr: String,
    renamed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for RangeDropper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl RangeDropper {
    fn start(upstream: &str) -> RangeDropper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let renamed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2, up) = (renamed.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let (up, r3) = (up.clone(), r2.clone());
                        std::thread::spawn(move || relay(client, &up, &r3));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        RangeDropper {
            addr,
            renamed,
            stop,
        }
    }
}

fn relay(client: TcpStream, upstream: &str, renamed: &AtomicUsize) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_read, mut s_write) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let (mut s_read, mut c_write) = (server, client);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match c_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let mut i = 0;
        while i + 8 <= chunk.len() {
            if chunk[i..i + 8].eq_ignore_ascii_case(b"\r\nrange:") {
                chunk[i + 2..i + 8].copy_from_slice(b"x-rng:");
                renamed.fetch_add(1, Ordering::SeqCst);
            }
            i += 1;
        }
        if s_write.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = s_write.shutdown(Shutdown::Write);
    let _ = back.join();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_ignores_range_still_serves_ranges() {
    let reg = OciRegistry::start(OciAuth::Anonymous);
    let relay = RangeDropper::start(&reg.host);
    push_and_check(&reg.host, &relay.addr, "ranges/ignored").await;
    assert!(
        relay.renamed.load(Ordering::SeqCst) >= 10,
        "the relay dropped the Range headers"
    );
}
