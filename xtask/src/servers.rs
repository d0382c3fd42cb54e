//! Provisioning of the real servers and clients the tests use. Idempotent:
//! installs only what is missing, as root via apt-get / pip, builds the Go
//! test peers ([`GO_TOOLS`]) from the Go module proxy, and fails loudly with
//! the installer's output when something cannot be installed.

use std::path::{Path, PathBuf};
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
        name: "restic 0.14 (bench peer: cargo xtask bench)",
        present: || has_bin("restic"),
        install: &["apt-get", "install", "-y", "-q", "restic"],
    },
    Tool {
        name: "borg 1.2 (bench peer: cargo xtask bench)",
        present: || has_bin("borg"),
        install: &["apt-get", "install", "-y", "-q", "borgbackup"],
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
        name: "skopeo (OCI interop: copy --all to an OCI layout)",
        present: || has_bin("skopeo"),
        install: &["apt-get", "install", "-y", "-q", "skopeo"],
    },
    Tool {
        name: "SeaweedFS (S3 tests: a real object store), built into $PF_GOBIN",
        present: || {
            let dir = std::env::var("PF_GOBIN")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "/opt/pf-go/bin".into());
            Path::new(&dir).join("weed").is_file()
        },
        // `go install m@v` refuses SeaweedFS: its go.mod has a `replace`
        // (go-bip39 -> the cosmos fork, the original repository is gone), so
        // it is built inside its own module directory, where the
        // replacement applies. Pinned to the pseudo-version the proxy serves.
        install: &["sh", "-c", SEAWEEDFS_BUILD],
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

/// Where the Go peers go unless `PF_GOBIN` says otherwise (the same
/// default as `pf_testsupport::go::DEFAULT_GOBIN`, which finds them there).
const DEFAULT_GOBIN: &str = "/opt/pf-go/bin";

/// One Go test peer, built with `go install <module>/<package>@<version>`.
struct GoTool {
    /// The binary `go install` writes into GOBIN.
    bin: &'static str,
    /// Human name.
    name: &'static str,
    /// The Go module.
    module: &'static str,
    /// The main package inside the module (`cmd/x`).
    package: &'static str,
    /// The pinned module version.
    version: &'static str,
    /// The module's go.mod has `replace` or `exclude` directives, which
    /// `go install m@v` refuses: build it as a dependency of a throwaway
    /// module instead, where those directives do not apply.
    as_dependency: bool,
}

/// The Go test peers. Cold build times on 2 loaded cores are in the README.
const GO_TOOLS: &[GoTool] = &[
    GoTool {
        bin: "ipfs",
        name: "Kubo (IPFS tests)",
        module: "github.com/ipfs/kubo",
        package: "cmd/ipfs",
        // Not v0.43.1: its go.mod replaces go-libp2p with a fork
        // (github.com/lidel/go-libp2p) whose version the module proxy does
        // not serve (403), and as a dependency of another module upstream
        // go-libp2p v0.49.0 does not compile against the webtransport-go
        // v0.13 it requires. v0.43.0 differs only by that QUIC dependency
        // bump (an offline test node speaks no QUIC).
        version: "v0.43.0",
        as_dependency: true,
    },
    GoTool {
        bin: "oras",
        name: "oras CLI (OCI interop)",
        module: "oras.land/oras",
        package: "cmd/oras",
        version: "v1.3.6",
        as_dependency: false,
    },
    GoTool {
        bin: "crane",
        name: "crane (OCI interop)",
        module: "github.com/google/go-containerregistry",
        package: "cmd/crane",
        version: "v0.22.1",
        as_dependency: false,
    },
    GoTool {
        bin: "cosign",
        name: "cosign (verifies pf's cosign signatures)",
        module: "github.com/sigstore/cosign/v2",
        package: "cmd/cosign",
        // The newest v2 the module proxy serves; v2 still reads the
        // tag-based `.sig` signatures by default (v3 defaults to bundles).
        version: "v2.6.5",
        as_dependency: false,
    },
    GoTool {
        bin: "registry",
        name: "distribution v3 registry (OCI tests)",
        module: "github.com/distribution/distribution/v3",
        package: "cmd/registry",
        version: "v3.1.2",
        as_dependency: false,
    },
];

fn gobin() -> PathBuf {
    std::env::var_os("PF_GOBIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GOBIN))
}

impl GoTool {
    fn path(&self) -> PathBuf {
        gobin().join(self.bin)
    }

    /// `<module>@<version>` recorded next to the binary once it is built.
    fn stamp(&self) -> PathBuf {
        gobin().join(format!(".{}.version", self.bin))
    }

    fn pin(&self) -> String {
        format!("{}@{}", self.module, self.version)
    }

    /// Present and built from the pinned version.
    fn present(&self) -> bool {
        self.path().is_file()
            && std::fs::read_to_string(self.stamp()).is_ok_and(|s| s.trim() == self.pin())
    }

    /// Builds the peer into GOBIN with CI-friendly settings: `-trimpath`,
    /// no VCS stamping, static (`CGO_ENABLED=0`); GOMAXPROCS, GOCACHE and
    /// GOMODCACHE stay as the caller set them.
    fn install(&self) -> Result<(), String> {
        let bin = gobin();
        std::fs::create_dir_all(&bin).map_err(|e| format!("creating {}: {e}", bin.display()))?;
        let go = |args: &[&str], dir: Option<&Path>| -> Result<String, String> {
            eprintln!("    $ go {}", args.join(" "));
            let mut cmd = Command::new("go");
            cmd.args(args)
                .env("GOBIN", &bin)
                .env("GOFLAGS", "-trimpath -buildvcs=false")
                .env("CGO_ENABLED", "0");
            if let Some(d) = dir {
                cmd.current_dir(d);
            }
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run go (install Go from go.dev): {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!(
                    "go {} failed ({}):\n{}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let target = format!("{}/{}", self.module, self.package);
        if self.as_dependency {
            let dir =
                std::env::temp_dir().join(format!("pf-go-{}-{}", self.bin, std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let out = self.path();
            let out = out.to_string_lossy();
            let built = go(&["mod", "init", "pf-go-peer"], Some(&dir))
                .and_then(|_| go(&["get", &format!("{target}@{}", self.version)], Some(&dir)))
                .and_then(|_| go(&["build", "-o", &out, &target], Some(&dir)));
            let _ = std::fs::remove_dir_all(&dir);
            built?;
        } else {
            go(&["install", &format!("{target}@{}", self.version)], None)?;
        }
        std::fs::write(self.stamp(), self.pin())
            .map_err(|e| format!("writing {}: {e}", self.stamp().display()))
    }
}

fn install_go_tools() -> Result<(), String> {
    for t in GO_TOOLS {
        if t.present() {
            eprintln!("    ok: {} ({})", t.name, t.path().display());
            continue;
        }
        eprintln!("    building: {} {}", t.name, t.pin());
        t.install()?;
        if !t.present() {
            return Err(format!("{} is still missing after building it", t.name));
        }
    }
    Ok(())
}
/// Builds SeaweedFS's `weed` into `$PF_GOBIN` (default `/opt/pf-go/bin`).
const SEAWEEDFS_BUILD: &str = r#"set -eu
v=v0.0.0-20261109003541-7506e5f91cd6
bin="${PF_GOBIN:-/opt/pf-go/bin}"
mkdir -p "$bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$(GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
cd "$tmp/src"
GOFLAGS=-mod=mod go build -o "$bin/weed" ./weed
"#;

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
    install_go_tools()
}

/// Checks every tool is present, naming the missing ones.
pub fn check_all() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|t| !(t.present)())
        .map(|t| t.name)
        .chain(GO_TOOLS.iter().filter(|t| !t.present()).map(|t| t.name))
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
