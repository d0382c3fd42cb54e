//! Real servers for tests, started on 127.0.0.1 by the tests themselves.
//!
//! Every launcher fails loudly (panics with what to install) when its server
//! cannot start: a missing server is a failed test, never a skipped one.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod faults;
pub mod go;
pub mod ipfs;
pub mod memory;
pub mod process;
pub mod registry;
pub mod rewrite;
pub mod s3;

pub use faults::{Fault, FaultProxy};
pub use go::{go_tool, gobin};
pub use ipfs::IpfsServer;
pub use process::{free_port, script_json, ChildServer, ServerProcess};
pub use registry::{Distribution, OciAuth, OciRegistry};
pub use s3::S3Server;

/// `n` deterministic bytes that do not repeat (xorshift64, one byte per
/// step): incompressible test data, the same for the same `seed`, cut by
/// content-defined chunking into several chunks.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
