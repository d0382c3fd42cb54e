//! Large incompressible test data and peak-RSS readings (Linux `/proc`), for
//! tests that assert memory stays bounded while moving big blobs.

use std::io::Read;

/// Incompressible pseudo-random bytes (xorshift), `left` of them.
pub struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    /// `len` bytes from `seed` (the same seed gives the same bytes).
    pub fn new(seed: u64, len: u64) -> Noise {
        Noise {
            state: seed,
            left: len,
        }
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A `/proc/self/status` figure in KiB (`"VmRSS:"`, `"VmHWM:"`); panics if absent.
pub fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the peak-RSS counter `VmHWM` (Linux: write 5 to clear_refs).
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}
