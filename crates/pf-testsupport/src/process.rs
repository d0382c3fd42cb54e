//! Child-process servers: spawn, wait for readiness, kill on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (racy by nature, but fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral loopback port")
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
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
