//! Child-process servers: spawn, wait for readiness, kill on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`] come from here: below Linux's default
/// ephemeral range (32768-60999), so no outgoing connection can take one
/// between the check and the server's bind.
const PORT_RANGE: std::ops::Range<u32> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a server to bind. Never the same port
/// twice in one process (tests run in parallel threads and each starts its
/// own server: two servers sharing a port would let one test talk to the
/// other's server), and outside the ephemeral range; each process starts
/// at its own offset so consecutive test binaries do not reuse ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % span));
    for _ in 0..span {
        let port = PORT_RANGE.start + next.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("port range fits in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORT_RANGE:?}")
}

/// A server process that is killed when dropped. Its stdout+stderr go to `log`.
pub struct ChildServer {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ChildServer {
    /// Spawns `cmd` with output to `log` and waits until `port` accepts TCP
    /// connections. Panics with `install_hint` if the program cannot start.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        port: u16,
        install_hint: &str,
    ) -> ChildServer {
        let out = File::create(log).expect("create server log");
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}. {install_hint}"));
        let mut s = ChildServer {
            child,
            name: name.into(),
            log: log.to_path_buf(),
        };
        s.wait_port(port, Duration::from_secs(60));
        s
    }

    fn wait_port(&mut self, port: u16, timeout: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up ({status}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not listen on {addr} within {timeout:?}; log {}",
            self.name,
            self.log.display()
        );
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log's current contents.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines (access-log style, `"METHOD path ..."`) for `method`
    /// requests whose line contains `needle`.
    pub fn count_requests(&self, method: &str, needle: &str) -> usize {
        let m = format!("\"{method} ");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&m) && l.contains(needle))
            .count()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        assert!(ports
            .iter()
            .all(|p| PORT_RANGE.contains(&u32::from(*p)) && *p < 32768));
    }
}
