//! The lifecycle cases on the ipfs backend against real Kubo nodes: the
//! node's MFS index (`ipfs://`) is the repository, committed images are
//! its records, gc deletes index entries. The index is node-wide, so each
//! case gets its own node (target `ipfs_<case>`); the concurrent push + gc
//! loop runs its 50 rounds (`PF_GC_ROUNDS` raises them). Each case is its
//! own test: `ipfs_<case>::lifecycle::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, lifecycle, Suite};

fn main() -> ExitCode {
    let targets = lifecycle::CASES
        .iter()
        .map(|(case, _)| {
            common::ipfs_target::index_target(&format!("ipfs_{case}"))
                .only(&format!("lifecycle::{case}"))
        })
        .collect();
    harness::run(&[Suite::Lifecycle], targets)
}
