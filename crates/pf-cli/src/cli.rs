//! The `pf` command line: global flags and subcommands (clap definitions
//! only; `lib.rs` runs them).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{lifecycle, progress};

/// Push and pull ProcessFork snapshots to file, OCI, S3, Hugging Face and IPFS.
#[derive(Parser, Debug)]
#[command(name = "pf", version, about)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress bars or notes on stderr.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// Transfer progress on stderr: a bar on a terminal (auto, bar), none,
    /// or one JSON object per event a line (json), for programs driving pf.
    #[arg(long, global = true, value_enum, default_value_t, env = "PF_PROGRESS")]
    pub(crate) progress: progress::ProgressMode,
    /// Local blob store (default: $XDG_CACHE_HOME/pf-registry/store, else
    /// $HOME/.cache/pf-registry/store; required when neither is set).
    #[arg(long, global = true, env = "PF_STORE")]
    pub(crate) store: Option<PathBuf>,
    /// Allow plain HTTP to non-loopback registries.
    #[arg(long, global = true, env = "PF_INSECURE")]
    pub(crate) insecure: bool,
    /// Extra CA certificate (PEM) to trust for TLS.
    #[arg(long, global = true, env = "PF_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// zstd level for pushes.
    #[arg(long, global = true, env = "PF_ZSTD_LEVEL", default_value_t = pf_registry::config::DEFAULT_ZSTD_LEVEL)]
    pub(crate) zstd_level: i32,
    /// Blobs transferred at once.
    #[arg(long, global = true, env = "PF_CONCURRENCY")]
    pub(crate) concurrency: Option<usize>,
    /// Backend option KEY=VALUE (e.g. hf.public=true); repeatable. Keep
    /// secrets (hf.token, s3.secret_access_key, s3.session_token) out of
    /// `ps`: KEY_file=PATH reads the value from PATH (e.g.
    /// -o hf.token_file=/run/secrets/hf), or set `PF_OPTION_<KEY>` with `.`
    /// as `_` (e.g. PF_OPTION_HF_TOKEN); the command line wins.
    #[arg(long = "option", short = 'o', global = true, value_name = "KEY=VALUE")]
    pub(crate) options: Vec<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Snapshot DIR and push it to REF.
    #[command(
        after_help = "Example:\n  pf push ./world oci://registry.example/agent:latest --key pf-signing.key\n  pf push ./world s3://bucket/agents:v2 --json"
    )]
    Push {
        /// Directory to snapshot.
        dir: PathBuf,
        /// Destination reference.
        reference: String,
        /// PKCS#8 private key to sign with (an ECDSA P-256 key from `pf
        /// keygen --cosign` also writes a cosign signature to oci://).
        #[arg(long, env = "PF_KEY")]
        key: Option<PathBuf>,
        /// Agent name recorded in the manifest.
        #[arg(long, default_value = "pf")]
        agent: String,
        /// Parent manifest digest; repeatable.
        #[arg(long)]
        parent: Vec<String>,
        /// Annotation KEY=VALUE; repeatable.
        #[arg(long)]
        annotation: Vec<String>,
        /// FastCDC chunk sizes MIN,AVG,MAX (bytes or KiB/MiB suffixes;
        /// default 8KiB,32KiB,128KiB). Another chunker than the last
        /// push's re-sends every chunk once.
        #[arg(long, env = "PF_CHUNKER", value_parser = parse_chunker)]
        chunker: Option<pf_snapshot::Chunking>,
        /// Encrypt the image to this recipient file (`pf keygen
        /// --encryption`); repeatable. Off by default.
        #[arg(long, value_name = "RECIPIENT_FILE")]
        encrypt_to: Vec<PathBuf>,
    },
    /// Pull REF into the local store, optionally restoring files.
    #[command(
        after_help = "Example:\n  pf pull oci://registry.example/agent:latest --into ./restored --trust pf-signing.pub\n  pf pull hf://datasets/owner/repo@main --into ./restored --include etc/app.toml"
    )]
    Pull {
        /// Source reference.
        reference: String,
        /// Restore the snapshot's files into this (new or empty) directory.
        #[arg(long)]
        into: Option<PathBuf>,
        /// With --into: restore only this path of the image (a file or a
        /// whole directory) and fetch only the blobs it needs; repeatable.
        #[arg(long, value_name = "PATH", requires = "into")]
        include: Vec<String>,
        /// With --into: refuse (exit 4) an image whose files total more
        /// than this (bytes, or with a KiB/MiB/GiB/TiB suffix); an image
        /// larger than the target's free space is refused too.
        #[arg(long, env = "PF_MAX_SIZE", value_parser = parse_size,
              default_value_t = pf_snapshot::restore::DEFAULT_MAX_SIZE)]
        max_size: u64,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
        /// Identity file opening an encrypted image (`pf keygen
        /// --encryption`); repeatable (comma-separated in PF_IDENTITY):
        /// the one the image was sealed for is used.
        #[arg(long, env = "PF_IDENTITY", value_name = "FILE", value_delimiter = ',')]
        identity: Vec<PathBuf>,
    },
    /// Write one regular file of REF to stdout, fetching only its blobs.
    #[command(after_help = "Example:\n  pf cat file:///mnt/usb/agent etc/app.toml > app.toml")]
    Cat {
        /// Source reference.
        reference: String,
        /// Path of the file in the image's fs tree.
        path: String,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
        /// Identity file opening an encrypted image; repeatable
        /// (comma-separated in PF_IDENTITY), as for `pf pull`.
        #[arg(long, env = "PF_IDENTITY", value_name = "FILE", value_delimiter = ',')]
        identity: Vec<PathBuf>,
    },
    /// List REF's fs tree (kind, octal mode, size, path), or the part at
    /// PATH; fetches no file content.
    #[command(after_help = "Example:\n  pf ls s3://bucket/agents:v2 var/log --json")]
    Ls {
        /// Source reference.
        reference: String,
        /// List only this entry and what is under it.
        path: Option<String>,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
        /// Identity file opening an encrypted image; repeatable
        /// (comma-separated in PF_IDENTITY), as for `pf pull`.
        #[arg(long, env = "PF_IDENTITY", value_name = "FILE", value_delimiter = ',')]
        identity: Vec<PathBuf>,
    },
    /// Exit 0 if REF exists, 2 if not.
    #[command(
        after_help = "Example:\n  pf exists oci://registry.example/agent:latest && echo present"
    )]
    Exists {
        /// Reference.
        reference: String,
    },
    /// Show the manifest, sizes and signer of REF.
    #[command(
        after_help = "Example:\n  pf inspect hf://owner/repo@main --trust pf-signing.pub --json"
    )]
    Inspect {
        /// Reference.
        reference: String,
        /// Trusted public key file; repeatable.
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    /// Copy an image between registries, keeping its signature.
    #[command(
        after_help = "Example:\n  pf copy oci://registry.example/agent:v1 s3://bucket/agents:v1"
    )]
    Copy {
        /// Source reference.
        src: String,
        /// Destination reference.
        dst: String,
        /// Trusted public key file; repeatable.
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    #[command(flatten)]
    Lifecycle(lifecycle::LifecycleCmd),
    /// Generate a key pair: OUT.key (PKCS#8 private key, 0600) and OUT.pub
    /// (SubjectPublicKeyInfo public key). Ed25519, or with --cosign ECDSA
    /// P-256, which `cosign verify --key OUT.pub` also checks.
    #[command(
        after_help = "Example:\n  pf keygen --out ~/.config/pf/signing   # writes signing.key and signing.pub\n  pf keygen --cosign                      # writes cosign.key and cosign.pub"
    )]
    Keygen {
        /// Output path prefix (default: pf-signing, cosign with --cosign,
        /// pf-crypt with --encryption).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Make an ECDSA P-256 key: `pf push --key` with it also writes a
        /// cosign signature to oci:// destinations.
        #[arg(long)]
        cosign: bool,
        /// Make an X25519 encryption key pair instead: OUT.identity
        /// (secret, 0600) and OUT.recipient (for `push --encrypt-to`).
        #[arg(long, conflicts_with = "cosign")]
        encryption: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  pf completions bash > ~/.local/share/bash-completion/completions/pf"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// A byte count: digits with an optional binary suffix (KiB, MiB, GiB, TiB).
/// `MIN,AVG,MAX` chunk sizes, checked against FastCDC's bounds.
pub(crate) fn parse_chunker(s: &str) -> Result<pf_snapshot::Chunking, String> {
    let v: Vec<u64> = s.split(',').map(parse_size).collect::<Result<_, _>>()?;
    let [min, avg, max] = v[..] else {
        return Err("give three sizes: MIN,AVG,MAX".into());
    };
    let ok = (64..=1 << 20).contains(&min)
        && (256..=4 << 20).contains(&avg)
        && (1024..=16 << 20).contains(&max)
        && min <= avg
        && avg <= max;
    if !ok {
        return Err(
            "sizes must satisfy 64 <= MIN <= AVG <= MAX, MIN <= 1MiB, 256 <= AVG <= 4MiB, 1KiB <= MAX <= 16MiB"
                .into(),
        );
    }
    Ok(pf_snapshot::Chunking {
        cdc_min: min as u32,
        cdc_avg: avg as u32,
        cdc_max: max as u32,
        ..pf_snapshot::Chunking::default()
    })
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500MiB, 64GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" | "k" => 10,
        "mib" | "m" => 20,
        "gib" | "g" => 30,
        "tib" | "t" => 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}
