//! The lifecycle cases on the hf backend against the Hub test server:
//! tags, log, rm, retain, gc (deletions are commits), verify and the
//! concurrent push + gc loop (`PF_GC_ROUNDS` raises its 50 rounds; a push
//! whose parent commit moved commits again on the new head). Each case is
//! its own test: `hf::lifecycle::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    harness::run(&[Suite::Lifecycle], vec![common::hf_target::target()])
}
