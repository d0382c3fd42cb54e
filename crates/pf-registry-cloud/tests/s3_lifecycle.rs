//! The lifecycle cases on the s3 backend against a real moto server,
//! including the concurrent push + gc loop (`PF_GC_ROUNDS` raises its 50
//! rounds). Each case is its own test: `s3::lifecycle::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(&[Suite::Lifecycle], vec![common::s3_target::target()])
}
