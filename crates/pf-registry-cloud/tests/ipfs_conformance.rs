//! The shared suites on the ipfs backend against its real test server:
//! conformance properties, fault scenarios, the `kill -9` crash loop. Each
//! case is its own test: `ipfs::<suite>::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(
        &[Suite::Conformance, Suite::Faults, Suite::Crash],
        vec![common::ipfs_target::target()],
    )
}
