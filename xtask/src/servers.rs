//! Provisioning of the real servers and clients the tests use. Idempotent:
//! installs only what is missing, as root via apt-get / pip, and fails
//! loudly with the installer's output when something cannot be installed.

use std::path::Path;
use std::process::Command;

/// One tool the test suite needs.
struct Tool {
    /// Human name.
    name: &'static str,
    /// How to tell it is present.
    present: fn() -> bool,
    /// How to install it.
    install: &'static [&'static str],
}

fn has_bin(p: &str) -> bool {
    Path::new(p).exists()
        || std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
}

fn has_py(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "docker-registry (CNCF distribution, OCI tests)",
        present: || has_bin("/usr/bin/docker-registry"),
        install: &["apt-get", "install", "-y", "-q", "docker-registry"],
    },
    Tool {
        name: "curl",
        present: || has_bin("curl"),
        install: &["apt-get", "install", "-y", "-q", "curl"],
    },
    Tool {
        name: "moto_server (S3 tests)",
        present: || has_bin("moto_server") && has_py("flask"),
        install: &["python3", "-m", "pip", "install", "-q", "moto[server]"],
    },
    Tool {
        name: "js-ipfs 0.66 (IPFS tests; Kubo RPC API)",
        present: || Path::new("/opt/pf-jsipfs/node_modules/.bin/jsipfs").exists(),
        install: &[
            "npm",
            "install",
            "--prefix",
            "/opt/pf-jsipfs",
            "--no-audit",
            "--no-fund",
            "ipfs@0.66.1",
        ],
    },
    Tool {
        name: "oras-py (OCI interop test)",
        present: || has_py("oras.provider"),
        install: &["python3", "-m", "pip", "install", "-q", "oras"],
    },
    Tool {
        // A cold `cargo install` compiles it: 857 s measured on 2 shared cores.
        name: "cargo-deny (bans, licenses, sources of the dependency graph)",
        present: || has_bin("cargo-deny"),
        install: &["cargo", "install", "--locked", "cargo-deny"],
    },
    Tool {
        name: "huggingface_hub (Hub test-server fidelity test)",
        present: || has_py("huggingface_hub"),
        install: &["python3", "-m", "pip", "install", "-q", "huggingface_hub"],
    },
];

fn run_install(args: &[&str]) -> Result<(), String> {
    eprintln!("    $ {}", args.join(" "));
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Installs every missing tool. `apt-get update` runs once, only if an apt
/// install fails first.
pub fn install_all() -> Result<(), String> {
    let mut updated = false;
    for t in TOOLS {
        if (t.present)() {
            eprintln!("    ok: {}", t.name);
            continue;
        }
        eprintln!("    installing: {}", t.name);
        if let Err(e) = run_install(t.install) {
            if t.install[0] == "apt-get" && !updated {
                updated = true;
                run_install(&["apt-get", "update", "-q"])?;
                run_install(t.install)?;
            } else {
                return Err(e);
            }
        }
        if !(t.present)() {
            return Err(format!("{} is still missing after installing it", t.name));
        }
    }
    Ok(())
}

/// Checks every tool is present, naming the missing ones.
pub fn check_all() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|t| !(t.present)())
        .map(|t| t.name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {} (run `cargo xtask servers install`)",
            missing.join(", ")
        ))
    }
}
