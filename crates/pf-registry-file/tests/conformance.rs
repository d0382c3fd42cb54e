//! The shared suites on the file backend: the conformance properties and
//! the `kill -9` crash loop (a local directory has no network for a fault
//! proxy to stand in). Each case is its own test: `file::<suite>::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(
        &[Suite::Conformance, Suite::Faults, Suite::Crash],
        vec![common::target()],
    )
}
