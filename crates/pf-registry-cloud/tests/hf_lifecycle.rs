//! The lifecycle cases on the hf backend against the Hub test server:
//! tags, log, rm, retain, gc (deletions are commits) and verify. Each case
//! is its own test: `hf::lifecycle::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    let target = common::hf_target::target().known_gap(
        "lifecycle::concurrent_push_and_gc",
        "a push's commits name their parentCommit, so a gc or a second push committing meanwhile fails it with Conflict (never a broken image); the Hub serialises writers",
    );
    harness::run(&[Suite::Lifecycle], vec![target])
}
