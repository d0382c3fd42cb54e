//! Credentials go only to the registry host. A real docker-registry is told
//! (distribution's `http.host`) to hand out upload `Location`s on another
//! server, a small fake that records every request head it receives: pf
//! must never send it an `Authorization` header, neither the Bearer token
//! the registry's token service issued nor the Basic password it would
//! send when the fake challenges for one.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pf_cas::MemoryStore;
use pf_registry_conformance::ImageSpec;
use pf_registry_core::{Config, ImageRef, Registry, SignedImage};
use pf_testsupport::{OciAuth, OciRegistry};

/// A fake upload server on loopback: records each request head, reads the
/// body (`Content-Length`), answers `401` with a Basic challenge.
struct Fake {
    addr: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = l.local_addr().expect("addr").to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h2 = heads.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let h3 = h2.clone();
                std::thread::spawn(move || serve(c, &h3));
            }
        });
        Fake { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

fn serve(mut c: TcpStream, heads: &Mutex<Vec<String>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut b = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match c.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut rest = buf.split_off(end + 4);
        while rest.len() < len {
            match c.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&b[..n]),
            }
        }
        buf = rest.split_off(len.min(rest.len()));
        if let Ok(mut h) = heads.lock() {
            h.push(head);
        }
        let body = "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}";
        let _ = write!(
            c,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"fake\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

fn has_authorization(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_location_on_another_host_never_gets_credentials() {
    for auth in [OciAuth::Token, OciAuth::BasicTls] {
        let fake = Fake::start();
        let reg =
            OciRegistry::start_advertising(auth, true, Some(&format!("http://{}", fake.addr)));
        std::env::set_var("PF_OCI_USERNAME", reg.username.as_deref().expect("user"));
        std::env::set_var("PF_OCI_PASSWORD", reg.password.as_deref().expect("pass"));
        let cfg = Config {
            ca_file: reg.ca_file.clone(),
            retry: pf_registry_core::RetryPolicy::none(),
            ..Config::default()
        };
        let src = Arc::new(MemoryStore::new());
        let img = ImageSpec::sample(3, 2).build(&*src, "creds");
        let r = ImageRef::parse(&format!("oci://{}/team/creds:v1", reg.host)).expect("ref");
        let res = pf_registry_oci::open(&r, &cfg)
            .expect("open")
            .push(src, &SignedImage::new(&img.manifest, None))
            .await;
        let heads = fake.heads();
        assert!(
            !heads.is_empty(),
            "{auth:?}: the registry did not send pf to the fake ({res:?})"
        );
        for h in &heads {
            assert!(
                !has_authorization(h),
                "{auth:?}: credentials sent to another host:\n{h}"
            );
            let password = reg.password.as_deref().expect("pass");
            assert!(!h.contains(password));
        }
        assert!(res.is_err(), "{auth:?}: the fake refuses every upload");
        drop(reg);
        let _ = TcpStream::connect(&fake.addr).map(|s| s.shutdown(Shutdown::Both));
    }
    std::env::remove_var("PF_OCI_USERNAME");
    std::env::remove_var("PF_OCI_PASSWORD");
}
