//! The shared large-blob memory scenario (chunked PATCH uploads, streamed
//! downloads) in each auth flavour, alone in its test binary so the
//! peak-RSS figure is its own. Size: `PF_OCI_BIG_MIB` per blob (default 64)
//! times `PF_OCI_BIG_COUNT` blobs (default 4), within 300 MiB of growth.

mod common;

use std::process::ExitCode;

use pf_registry_conformance::{harness, Suite};

fn main() -> ExitCode {
    let docker = tempfile::tempdir().expect("tempdir");
    common::use_docker_config(docker.path());
    harness::run(&[Suite::LargeBlob], common::targets())
}
