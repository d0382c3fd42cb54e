//! Cloud backends: `s3://`, `hf://`, `ipfs://`, each behind its cargo
//! feature and each a folder with its settings (`config.rs`: options and
//! environment) apart from its transport (`transport.rs`). Each exports its
//! transport, its `open` function and `OPTIONS`, the `-o` keys it takes.
//!
//! Opening makes no request (the first push or pull does):
//!
//! ```
//! # #[cfg(feature = "s3")] {
//! use pf_registry_core::{Config, ImageRef};
//! let r = ImageRef::parse("s3://bucket/images:v1").unwrap();
//! let mut config = Config::default();
//! config.options.insert("s3.endpoint".into(), "http://127.0.0.1:9000".into());
//! config.options.insert("s3.region".into(), "eu-west-1".into());
//! let _registry = pf_registry_cloud::s3::open(&r, &config).unwrap();
//! // Plain HTTP only to loopback hosts (or with `Config.insecure`).
//! config.options.insert("s3.endpoint".into(), "http://s3.example.com".into());
//! assert!(pf_registry_cloud::s3::open(&r, &config).is_err());
//! # }
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "hf")]
pub mod hf;

#[cfg(feature = "ipfs")]
pub mod ipfs;
