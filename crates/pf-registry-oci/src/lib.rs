//! oci:// backend (OCI distribution spec v1.1).
#![forbid(unsafe_code)]
