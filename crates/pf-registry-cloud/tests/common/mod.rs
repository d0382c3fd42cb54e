//! Shared test helpers: S3 configs, and each cloud backend as a target of
//! pf-registry-conformance's shared suites.
#![allow(dead_code)]

#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
pub use s3::*;

#[cfg(feature = "hf")]
pub mod hf_target;
#[cfg(feature = "ipfs")]
pub mod ipfs_target;
#[cfg(feature = "s3")]
pub mod s3_target;

/// The port of `http://127.0.0.1:<port>[/...]` or `127.0.0.1:<port>`.
pub fn port_of(addr: &str) -> u16 {
    let host_port = addr.split("://").last().unwrap_or(addr);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    host_port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}
