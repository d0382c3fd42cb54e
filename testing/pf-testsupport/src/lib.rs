//! Real servers for tests, started on 127.0.0.1 by the tests themselves.
//!
//! Every launcher fails loudly (panics with what to install) when its server
//! cannot start: a missing server is a failed test, never a skipped one.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod faults;
pub mod go;
pub mod ipfs;
pub mod memory;
pub mod process;
pub mod registry;
pub mod rewrite;
pub mod s3;

pub use faults::{Fault, FaultProxy};
pub use go::{go_tool, gobin};
pub use ipfs::IpfsServer;
pub use process::{free_port, script_json, ChildServer, ServerProcess};
pub use registry::{Distribution, OciAuth, OciRegistry};
pub use s3::S3Server;
