//! Cloud backends: `s3://`, `hf://`, `ipfs://`, each behind its cargo
//! feature and each a folder with its settings (`config.rs`: options and
//! environment) apart from its transport (`transport.rs`). Each exports its
//! transport, its `open` function and `OPTIONS`, the `-o` keys it takes.
#![forbid(unsafe_code)]

#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "hf")]
pub mod hf;

#[cfg(feature = "ipfs")]
pub mod ipfs;
