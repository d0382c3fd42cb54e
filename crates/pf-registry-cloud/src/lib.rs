//! Cloud backends: s3://, hf://, ipfs:// (each behind its cargo feature).
#![forbid(unsafe_code)]

#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "hf")]
pub mod hf;

#[cfg(feature = "ipfs")]
pub mod ipfs;
