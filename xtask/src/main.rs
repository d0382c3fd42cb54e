//! `cargo xtask`: the project's automation.
//!
//! - `ci`: provision test servers, then fmt, clippy, tests (including the
//!   conformance suite on every backend against real servers and the
//!   doctests), `cargo doc` with `-D warnings`, the minimal-build check and
//!   `cargo deny check bans licenses sources`. Fails loudly on the first failing step.
//! - `conformance [--backend NAME]`: only the conformance suite.
//! - `bench [--size 1GiB] [--runs 3] [--backend oci,s3] [--levels 1,3,6,9|none]
//!   [--scenario base,levels,edits,pull,small,crypt,big|all] [--small-files N] [--quick] [--pf PATH]`:
//!   push/pull figures beside baselines and peers (restic, borg), and what
//!   each zstd level costs and saves.
//! - `minimal`: the minimal-build check alone.
//! - `man`: man pages for `pf` (and each subcommand) into `target/man`.
//! - `servers [install|check]`: provision the real servers the tests start.
#![forbid(unsafe_code)]

mod bench;
mod man;
mod servers;

use std::process::{Command, ExitCode};
use std::time::Instant;

/// Crates that must never appear in a file-only build.
const FORBIDDEN_IN_MINIMAL: &[&str] = &[
    "reqwest",
    "hyper",
    "object_store",
    "ipfs-api",
    "h2",
    "rustls",
    "aws-",
];

/// Backends and the test targets that run the shared suites for each: the
/// conformance, fault and crash suites, then the large-blob scenario (a
/// binary of its own, for its peak-RSS figure). Every case is a named test
/// `<target>::<suite>::<case>`.
const CONFORMANCE: &[(&str, &str, &[&str])] = &[
    // (backend, package, test targets)
    ("file", "pf-registry-file", &["conformance", "large_blob"]),
    ("oci", "pf-registry-oci", &["conformance", "large_blob"]),
    ("s3", "pf-registry-cloud", &["s3_conformance", "s3_large"]),
    ("hf", "pf-registry-cloud", &["hf_conformance", "hf_large"]),
    (
        "ipfs",
        "pf-registry-cloud",
        &["ipfs_conformance", "ipfs_large"],
    ),
];

fn main() -> ExitCode {
    // Started through a link named `pf`: the `pf` command itself (file
    // backend only), so `bench --pf <link>` runs without a release build
    // (the bench's own test does that).
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("pf".as_ref()) {
        return pf_cli::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("conformance") => conformance(backend_arg(&args)),
        Some("minimal") => minimal_build(),
        Some("bench") => bench::bench(&args[1..]),
        Some("man") => man::man(),
        Some("servers") => match args.get(1).map(String::as_str) {
            Some("install") => servers::install_all(),
            Some("check") | None => servers::check_all(),
            Some(other) => Err(format!(
                "unknown servers command {other:?} (install | check)"
            )),
        },
        _ => {
            eprintln!("usage: cargo xtask <ci | conformance [--backend NAME] | bench [--size N] [--runs N] [--backend oci,s3] [--scenario LIST] [--quick] [--pf PATH] | minimal | man | servers [install|check]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backend_arg(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1).cloned())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(step: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {step}\n    {cmd:?}");
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: cannot start: {e}"))?;
    eprintln!(
        "<== {step}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    let t = Instant::now();
    eprintln!("\n==> provisioning test servers");
    servers::install_all()?;
    servers::check_all()?;
    run("rustfmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "tests",
        cargo().args(["test", "--workspace", "--all-features", "--no-fail-fast"]),
    )?;
    // Broken intra-doc links, private links and bad HTML fail the build
    // (the front-page examples ran as doctests in "tests").
    run(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    minimal_build()?;
    deny()?;
    eprintln!(
        "\nxtask ci: all steps passed in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn conformance(only: Option<String>) -> Result<(), String> {
    let mut ran = 0;
    for (backend, pkg, tests) in CONFORMANCE {
        if only.as_deref().is_some_and(|o| o != *backend) {
            continue;
        }
        let mut cmd = cargo();
        cmd.args(["test", "-p", pkg, "--all-features"]);
        for t in *tests {
            cmd.args(["--test", t]);
        }
        run(&format!("conformance: {backend}"), &mut cmd)?;
        ran += 1;
    }
    if ran == 0 {
        return Err(format!("no conformance suite for backend {only:?}"));
    }
    Ok(())
}

/// cargo-deny against deny.toml: banned crates (TLS is rustls only, never
/// OpenSSL / native-tls), licenses, and sources. Advisories are not checked:
/// their database cannot be fetched here (see deny.toml).
fn deny() -> Result<(), String> {
    run(
        "cargo deny: bans, licenses, sources",
        cargo().args(["deny", "check", "bans", "licenses", "sources"]),
    )
}

fn minimal_build() -> Result<(), String> {
    // The library embedders pick, and the `pf` binary built the same way.
    for pkg in ["pf-registry", "pf-cli"] {
        minimal_build_of(pkg)?;
    }
    Ok(())
}

/// Builds `pkg` with `--no-default-features --features file` and checks its
/// dependency tree holds none of [`FORBIDDEN_IN_MINIMAL`].
fn minimal_build_of(pkg: &str) -> Result<(), String> {
    let args = ["-p", pkg, "--no-default-features", "--features", "file"];
    run(
        &format!("minimal build of {pkg} (file only)"),
        cargo().arg("build").args(args),
    )?;
    eprintln!("\n==> minimal build of {pkg}: dependency tree must contain no HTTP stack");
    let out = cargo()
        .arg("tree")
        .args(args)
        .args(["-e", "normal", "--prefix", "none"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> = tree
        .lines()
        .filter(|l| FORBIDDEN_IN_MINIMAL.iter().any(|f| l.starts_with(f)))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "file-only build of {pkg} pulls in an HTTP stack: {bad:?}"
        ));
    }
    eprintln!(
        "<== minimal build of {pkg}: ok ({} crates, none of {FORBIDDEN_IN_MINIMAL:?})",
        tree.lines().count()
    );
    Ok(())
}
