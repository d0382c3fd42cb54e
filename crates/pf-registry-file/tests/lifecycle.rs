//! The lifecycle cases on the file backend, including the concurrent push +
//! gc loop (`PF_GC_ROUNDS` raises its 50 rounds). Each case is its own
//! test: `file::lifecycle::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(&[Suite::Lifecycle], vec![common::target()])
}
