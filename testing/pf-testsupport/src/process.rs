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

/// A test server that runs as a [`ChildServer`]: its log, and requests
/// counted from it, written once for every launcher.
pub trait ServerProcess {
    /// The server process.
    fn process(&self) -> &ChildServer;

    /// The server's log as it is now.
    fn log_text(&self) -> String {
        self.process().log_text()
    }

    /// Log lines for `method` requests whose line contains `needle`.
    fn count_requests(&self, method: &str, needle: &str) -> usize {
        self.process().count_requests(method, needle)
    }
}

/// The output of a helper script (`what` names it in the failure): must
/// have exited 0; its stdout parsed as JSON.
pub fn script_json(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}"))
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

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the server process has used so far
    /// (Linux `/proc/<pid>/stat`; 0 when unreadable).
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
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
