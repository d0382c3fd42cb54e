//! The shared large-blob memory scenario on the ipfs backend, alone in its
//! test binary so the peak-RSS figure is its own.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(&[Suite::LargeBlob], vec![common::ipfs_target::target()])
}
