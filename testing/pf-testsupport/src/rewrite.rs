//! A pass-through TCP relay that rewrites addresses in server responses, for
//! putting fault proxies in front of a server that hands out absolute URLs
//! (the Hub's LFS hrefs, redirects and pagination links).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::faults::{forward_requests, FaultProxy};

/// A fault proxy to `upstream` whose address is as long as `like`, so
/// that rewriting one into the other keeps every Content-Length right.
pub fn proxy_as_long_as(upstream: &str, like: &str) -> FaultProxy {
    for _ in 0..50 {
        let p = FaultProxy::start(upstream, vec![]);
        if p.addr.len() == like.len() {
            return p;
        }
    }
    panic!("no proxy port with as many digits as {like}");
}

/// A pass-through TCP relay that replaces each `from` with its `to` (same
/// length) in the server-to-client bytes. Stops accepting when dropped.
pub struct Rewriter {
    stop: Arc<AtomicBool>,
}

impl Drop for Rewriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Rewriter {
    /// Relays connections accepted on `listener` to `upstream`, replacing
    /// each `(from, to)` of `rules` (same lengths) in the response bytes.
    pub fn start(
        listener: TcpListener,
        upstream: String,
        rules: Vec<(String, String)>,
    ) -> Rewriter {
        let rules: Arc<Vec<(Vec<u8>, Vec<u8>)>> = Arc::new(
            rules
                .into_iter()
                .map(|(f, t)| {
                    assert_eq!(f.len(), t.len(), "rewrite {f} -> {t} changes lengths");
                    (f.into_bytes(), t.into_bytes())
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (up, rules) = (upstream.clone(), rules.clone());
                        std::thread::spawn(move || relay(client, &up, &rules));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Rewriter { stop }
    }
}

fn rewrite(buf: &mut [u8], rules: &[(Vec<u8>, Vec<u8>)]) {
    let mut i = 0;
    while i < buf.len() {
        match rules.iter().find(|(f, _)| buf[i..].starts_with(f)) {
            Some((f, t)) => {
                buf[i..i + f.len()].copy_from_slice(t);
                i += f.len();
            }
            None => i += 1,
        }
    }
}

/// Length of the longest tail of `buf` that may be the start of a pattern.
fn partial_tail(buf: &[u8], rules: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let longest = rules.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
    (1..longest.min(buf.len() + 1))
        .rev()
        .find(|&k| {
            rules
                .iter()
                .any(|(f, _)| f.starts_with(&buf[buf.len() - k..]))
        })
        .unwrap_or(0)
}

fn relay(client: TcpStream, upstream: &str, rules: &[(Vec<u8>, Vec<u8>)]) {
    let _ = client.set_nonblocking(false);
    let Some((mut s_read, mut c_write)) = forward_requests(client, upstream) else {
        return;
    };
    // A short read timeout flushes a held-back partial match when the server pauses.
    let _ = s_read.set_read_timeout(Some(Duration::from_millis(20)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s_read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                rewrite(&mut pending, rules);
                let send = pending.len() - partial_tail(&pending, rules);
                if c_write.write_all(&pending[..send]).is_err() {
                    return;
                }
                pending.drain(..send);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !pending.is_empty() {
                    if c_write.write_all(&pending).is_err() {
                        return;
                    }
                    pending.clear();
                }
            }
            Err(_) => break,
        }
    }
    let _ = c_write.write_all(&pending);
    let _ = c_write.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_keeps_lengths_and_holds_back_partial_matches() {
        let rules = vec![(b"127.0.0.1:40001".to_vec(), b"127.0.0.1:51234".to_vec())];
        let mut b = b"Location: http://127.0.0.1:40001/x 127.0.0.1:4".to_vec();
        rewrite(&mut b, &rules);
        assert_eq!(&b[..], b"Location: http://127.0.0.1:51234/x 127.0.0.1:4");
        assert_eq!(partial_tail(&b, &rules), 11);
        assert_eq!(partial_tail(b"abc", &rules), 0);
    }
}
