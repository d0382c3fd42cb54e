//! A fault-injecting TCP proxy for HTTP servers on loopback, placed between
//! a client and a REAL server: each accepted connection takes the next fault
//! from a script (then passes traffic through untouched once the script is
//! exhausted).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    Pass,
    /// Answer the first request with this status (e.g. 500, 502, 503) and close.
    Status(u16),
    /// Answer 429 Too Many Requests with `Retry-After: secs` and close.
    TooManyRequests(u64),
    /// Forward the request, then cut the response after `n` bytes (reset mid-body).
    CutAfter(usize),
    /// Forward, but flip the byte at response offset `n` (after headers and all).
    FlipAt(usize),
    /// Forward, but flip the byte `n` bytes into the first response's body
    /// (counted from the end of its headers; not at all when its
    /// Content-Length is shorter), so the HTTP framing stays intact whatever
    /// the headers' length.
    FlipBodyAt(usize),
    /// Accept and say nothing for this long (longer than the client timeout).
    Stall(Duration),
}

/// A running proxy. Stops accepting when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:<port>` to point the client at.
    pub addr: String,
    script: Arc<Mutex<VecDeque<Fault>>>,
    injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`host:port`), applying `script` to successive connections.
    pub fn start(upstream: &str, script: Vec<Fault>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, i2, st2, up) = (
            script.clone(),
            injected.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            while !st2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let fault = s2
                            .lock()
                            .ok()
                            .and_then(|mut q| q.pop_front())
                            .unwrap_or(Fault::Pass);
                        if fault != Fault::Pass {
                            i2.fetch_add(1, Ordering::SeqCst);
                        }
                        let up = up.clone();
                        std::thread::spawn(move || handle(client, &up, fault));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        FaultProxy {
            addr,
            script,
            injected,
            stop,
        }
    }

    /// Faults applied so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// Appends more faults to the script.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut q) = self.script.lock() {
            q.extend(faults);
        }
    }

    /// Faults not yet applied.
    pub fn pending(&self) -> usize {
        self.script.lock().map(|q| q.len()).unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request_head(c: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    buf
}

fn respond(mut c: TcpStream, status: u16, extra: &str) {
    let _ = read_request_head(&mut c);
    let body = format!("{{\"errors\":[{{\"code\":\"INJECTED\",\"message\":\"fault {status}\"}}]}}");
    let _ = write!(
        c,
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = c.shutdown(Shutdown::Both);
}

/// Connects to `upstream` and copies everything `client` sends to it,
/// untouched, on a thread of its own. Returns `(upstream, client)` for the
/// caller to relay the response direction; `None` (the client is shut
/// down) when the upstream cannot be reached.
pub fn forward_requests(client: TcpStream, upstream: &str) -> Option<(TcpStream, TcpStream)> {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return None;
    };
    let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
        return None;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    Some((server, client))
}

/// The Content-Length of a response head, if it declares one.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Whether the chunked body that starts with `body` has ended in it (its
/// last, zero-size chunk).
fn chunked_ends(body: &[u8]) -> bool {
    body.starts_with(b"0\r\n\r\n") || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n")
}

fn handle(client: TcpStream, upstream: &str, fault: Fault) {
    match fault {
        Fault::Status(s) => return respond(client, s, ""),
        Fault::TooManyRequests(secs) => {
            return respond(client, 429, &format!("Retry-After: {secs}\r\n"))
        }
        Fault::Stall(d) => {
            std::thread::sleep(d);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        _ => {}
    }
    let Some((mut s_read, mut c_write)) = forward_requests(client, upstream) else {
        return;
    };
    // server -> client with the fault
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    // For FlipBodyAt: the first response's head, then where its body starts
    // in the stream and its Content-Length.
    let mut head: Vec<u8> = Vec::new();
    let mut body: Option<(usize, Option<usize>)> = None;
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        match fault {
            Fault::CutAfter(limit) if sent + n >= limit => {
                let keep = limit.saturating_sub(sent);
                let _ = c_write.write_all(&chunk[..keep]);
                let _ = c_write.shutdown(Shutdown::Both);
                let _ = s_read.shutdown(Shutdown::Both);
                return;
            }
            Fault::FlipAt(at) if at >= sent && at < sent + n => chunk[at - sent] ^= 0x5a,
            Fault::FlipBodyAt(k) => {
                // The stream up to the flip, to find where the first
                // response's body starts and (chunked) whether it ended.
                if body.is_none_or(|(start, _)| head.len() <= start + k) {
                    head.extend_from_slice(chunk);
                }
                if body.is_none() {
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        body = Some((i + 4, content_length(&head[..i])));
                    }
                }
                // Only inside the first response's body, never in the
                // framing of a later response on the same connection: past
                // a declared length, or past a chunked body's last chunk.
                if let Some((start, len)) = body {
                    let at = start + k;
                    let inside = match len {
                        Some(len) => k < len,
                        None => !chunked_ends(head.get(start..at).unwrap_or_default()),
                    };
                    if inside && at >= sent && at < sent + n {
                        chunk[at - sent] ^= 0x5a;
                    }
                }
            }
            _ => {}
        }
        sent += n;
        if c_write.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::chunked_ends;

    #[test]
    fn the_end_of_a_chunked_body_is_found_and_nothing_else_is() {
        assert!(chunked_ends(b"0\r\n\r\n"));
        assert!(chunked_ends(b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK"));
        assert!(!chunked_ends(b"5\r\nhello\r\n"));
        assert!(!chunked_ends(b"a\r\n0123456789\r\n"));
        assert!(!chunked_ends(b""));
    }
}
