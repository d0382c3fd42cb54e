//! The shared suites against a real docker-registry in each auth flavour:
//! conformance properties, fault scenarios, the `kill -9` crash loop. Each
//! case is its own test: `oci_<flavour>::<suite>::<case>`.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    let docker = tempfile::tempdir().expect("tempdir");
    common::use_docker_config(docker.path());
    harness::run(
        &[Suite::Conformance, Suite::Faults, Suite::Crash],
        common::targets(),
    )
}
