//! Go test peers (Kubo, oras, crane, cosign, distribution v3's registry) built by
//! `cargo xtask servers install` with `go install` into one fixed GOBIN.

use std::path::PathBuf;

/// Where `cargo xtask servers install` puts the Go peers unless `PF_GOBIN`
/// names another directory.
pub const DEFAULT_GOBIN: &str = "/opt/pf-go/bin";

/// The GOBIN the Go peers live in: `PF_GOBIN`, else [`DEFAULT_GOBIN`].
pub fn gobin() -> PathBuf {
    std::env::var_os("PF_GOBIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GOBIN))
}

/// The path of Go peer `name` (`ipfs`, `oras`, `crane`, `cosign`, `registry`); panics
/// naming the install command when it is missing (a missing peer fails the
/// test, it never skips it).
pub fn go_tool(name: &str) -> PathBuf {
    let p = gobin().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the Go test peers with `cargo xtask servers install` (PF_GOBIN overrides {DEFAULT_GOBIN})",
        p.display()
    );
    p
}
