//! `pf`: push, pull, inspect and copy ProcessFork snapshots.
#![forbid(unsafe_code)]

mod exit;
mod progress;
mod restore;
mod snapshot;
mod source;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pf_cas::{BlobStore, DirStore};
use pf_registry::manifest::{AgentInfo, FS_TREE_MEDIA_TYPE};
use pf_registry::{
    Config, Descriptor, Digest, ImageRef, Manifest, PublicKey, RegistryError, SignedImage,
    SigningKey, TrustPolicy, Verification,
};
use serde_json::json;

/// Push and pull ProcessFork snapshots to file, OCI, S3, Hugging Face and IPFS.
#[derive(Parser, Debug)]
#[command(name = "pf", version, about)]
struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or notes on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Local blob store (default: $XDG_CACHE_HOME/pf-registry/store).
    #[arg(long, global = true, env = "PF_STORE")]
    store: Option<PathBuf>,
    /// Allow plain HTTP to non-loopback registries.
    #[arg(long, global = true, env = "PF_INSECURE")]
    insecure: bool,
    /// Extra CA certificate (PEM) to trust for TLS.
    #[arg(long, global = true, env = "PF_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// zstd level for pushes.
    #[arg(long, global = true, env = "PF_ZSTD_LEVEL", default_value_t = pf_registry::config::DEFAULT_ZSTD_LEVEL)]
    zstd_level: i32,
    /// Blobs transferred at once.
    #[arg(long, global = true, env = "PF_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Backend option KEY=VALUE (e.g. hf.public=true); repeatable.
    #[arg(long = "option", short = 'o', global = true, value_name = "KEY=VALUE")]
    options: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Snapshot DIR and push it to REF.
    Push {
        /// Directory to snapshot.
        dir: PathBuf,
        /// Destination reference.
        reference: String,
        /// PKCS#8 private key to sign with.
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
    },
    /// Pull REF into the local store, optionally restoring files.
    Pull {
        /// Source reference.
        reference: String,
        /// Restore the snapshot's files into this (new or empty) directory.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    /// Exit 0 if REF exists, 2 if not.
    Exists {
        /// Reference.
        reference: String,
    },
    /// Show the manifest, sizes and signer of REF.
    Inspect {
        /// Reference.
        reference: String,
        /// Trusted public key file; repeatable.
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    /// Copy an image between registries, keeping its signature.
    Copy {
        /// Source reference.
        src: String,
        /// Destination reference.
        dst: String,
        /// Trusted public key file; repeatable.
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    /// Generate an Ed25519 key pair: OUT.key (private, 0600) and OUT.pub.
    Keygen {
        /// Output path prefix.
        #[arg(long, default_value = "pf-signing")]
        out: PathBuf,
    },
}

/// Errors of the CLI itself (usage and local input), exit code 1.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Sign(#[from] pf_sign::SignError),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 1,
            CliError::Registry(e) => exit::code(e),
            CliError::Sign(pf_sign::SignError::Io { .. })
            | CliError::Sign(pf_sign::SignError::Malformed(_)) => 1,
            CliError::Sign(pf_sign::SignError::KeyRejected(_)) => 1,
            CliError::Sign(_) => 4,
        }
    }
}

impl From<pf_cas::CasError> for CliError {
    fn from(e: pf_cas::CasError) -> Self {
        CliError::Registry(e.into())
    }
}

type CliResult<T> = std::result::Result<T, CliError>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PF_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pf: cannot start runtime: {e}");
            return ExitCode::from(5);
        }
    };
    let json = cli.json;
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            }
            eprintln!("pf: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn default_store() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pf-registry").join("store")
}

fn parse_ref(s: &str) -> CliResult<ImageRef> {
    Ok(ImageRef::parse(s)?)
}

fn config(cli: &Cli, trust: &[PathBuf]) -> CliResult<Config> {
    let mut c = Config {
        zstd_level: cli.zstd_level,
        insecure: cli.insecure,
        ca_file: cli.ca_file.clone(),
        progress: progress::for_terminal(!cli.quiet && !cli.json),
        ..Config::default()
    };
    if !(1..=22).contains(&cli.zstd_level) {
        return Err(CliError::Usage(format!(
            "--zstd-level {} is outside 1..=22",
            cli.zstd_level
        )));
    }
    if let Some(n) = cli.concurrency {
        c.concurrency = n.max(1);
    }
    for o in &cli.options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--option {o:?} is not KEY=VALUE")))?;
        c.options.insert(k.to_string(), v.to_string());
    }
    let keys = trust
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    c.trust = TrustPolicy::new(keys);
    Ok(c)
}

/// Opens the local store. Commands that write many blobs use deferred
/// durability (one `syncfs` at the end instead of an fsync per blob, see
/// pf_cas::Durability); a restoring pull stores only index blobs and fsyncs
/// each, so it never has to flush the restored files with the store.
fn open_store(cli: &Cli, durability: pf_cas::Durability) -> CliResult<Arc<DirStore>> {
    let root = cli.store.clone().unwrap_or_else(default_store);
    Ok(Arc::new(DirStore::open(root)?.with_durability(durability)))
}

fn describe(v: &Verification) -> String {
    match v {
        Verification::Verified { key_id } => format!("verified (key {key_id})"),
        Verification::Unsigned => "UNSIGNED (no signature; pass --trust to require one)".into(),
        Verification::UnknownKey { key_id } => {
            format!("signed by unknown key {key_id} (not verified; pass --trust to verify)")
        }
    }
}

fn note(cli: &Cli, msg: impl AsRef<str>) {
    if !cli.quiet {
        eprintln!("{}", msg.as_ref());
    }
}

async fn run(cli: Cli) -> CliResult<u8> {
    match &cli.cmd {
        Cmd::Keygen { out } => {
            let key = SigningKey::generate()?;
            let priv_path = out.with_extension("key");
            let pub_path = out.with_extension("pub");
            key.save(&priv_path)?;
            key.public_key().save(&pub_path)?;
            if cli.json {
                println!(
                    "{}",
                    json!({"key_id": key.key_id().to_string(), "private_key": priv_path, "public_key": pub_path})
                );
            } else {
                println!("key id:      {}", key.key_id());
                println!("private key: {}", priv_path.display());
                println!("public key:  {}", pub_path.display());
            }
            Ok(0)
        }
        Cmd::Push {
            dir,
            reference,
            key,
            agent,
            parent,
            annotation,
        } => {
            let r = parse_ref(reference)?;
            let cfg = config(&cli, &[])?;
            let key = key.as_deref().map(SigningKey::load).transpose()?;
            // The snapshot only writes its fs tree blob to the store (fsynced);
            // file contents are read from `dir` itself while pushing.
            let store = open_store(&cli, pf_cas::Durability::EachBlob)?;
            let source = Arc::new(source::SourceStore::new(store.clone()));
            let t0 = std::time::Instant::now();
            let image = snapshot_image(&cli, dir, &store, &source, agent, parent, annotation)?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "snapshot hashed");
            let signed = SignedImage::new(&image, key.as_ref());
            let reg = pf_registry::open(&r, &cfg)?;
            let rep = reg.push(source, &signed).await?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "pushed");
            if cli.json {
                println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            } else {
                println!("{}", rep.resolved);
                note(
                    &cli,
                    format!(
                        "pushed {} ({} of {} blobs uploaded, {} bytes sent){}",
                        rep.manifest_digest,
                        rep.blobs_uploaded,
                        rep.blobs_total,
                        rep.wire_bytes_uploaded,
                        if rep.signed { ", signed" } else { ", unsigned" }
                    ),
                );
            }
            Ok(0)
        }
        Cmd::Pull {
            reference,
            into,
            trust,
        } => {
            let r = parse_ref(reference)?;
            let cfg = config(&cli, trust)?;
            let store = open_store(
                &cli,
                if into.is_some() {
                    pf_cas::Durability::EachBlob
                } else {
                    pf_cas::Durability::Deferred
                },
            )?;
            let reg = pf_registry::open(&r, &cfg)?;
            let (rep, restored) = match into {
                None => {
                    let rep = reg.pull(store.clone()).await?;
                    // Deferred durability: one syncfs for the whole pull.
                    store.sync()?;
                    (rep, None)
                }
                Some(dest) => {
                    // File contents go straight into `dest` as they arrive.
                    let target = restore::RestoreTarget::new(dest);
                    let st: Arc<dyn BlobStore> = store.clone();
                    let pulled = reg.pull_into(st.clone(), &target).await;
                    let finished = match (&pulled, target.layout()) {
                        (Ok(_), Some(layout)) => {
                            let l2 = layout.clone();
                            tokio::task::spawn_blocking(move || l2.finish(&*st))
                                .await
                                .map_err(|e| CliError::Usage(format!("restore task failed: {e}")))
                                .and_then(|r| r.map_err(CliError::from))
                        }
                        _ => Ok(0),
                    };
                    if pulled.is_err() || finished.is_err() {
                        if let Some(layout) = target.layout() {
                            layout.abandon();
                        }
                    }
                    (pulled?, Some(finished?))
                }
            };
            if cli.json {
                let mut v = serde_json::to_value(&rep).unwrap_or_default();
                v["restored_bytes"] = json!(restored);
                println!("{v}");
            } else {
                println!("{}", rep.manifest_digest);
                note(&cli, format!("signature: {}", describe(&rep.verification)));
                note(
                    &cli,
                    format!(
                        "pulled {} blobs ({} fetched, {} already local, {} bytes received)",
                        rep.blobs_total,
                        rep.blobs_fetched,
                        rep.blobs_present,
                        rep.wire_bytes_fetched
                    ),
                );
                if let (Some(d), Some(b)) = (into, restored) {
                    note(&cli, format!("restored {b} bytes into {}", d.display()));
                }
            }
            Ok(0)
        }
        Cmd::Exists { reference } => {
            let r = parse_ref(reference)?;
            let cfg = config(&cli, &[])?;
            let found = pf_registry::open(&r, &cfg)?.exists().await?;
            if cli.json {
                println!("{}", json!({"reference": r.to_string(), "exists": found}));
            } else {
                println!("{}", if found { "exists" } else { "not found" });
            }
            Ok(if found { 0 } else { 2 })
        }
        Cmd::Inspect { reference, trust } => {
            let r = parse_ref(reference)?;
            let cfg = config(&cli, trust)?;
            let ins = pf_registry::open(&r, &cfg)?.inspect().await?;
            let total: u64 = ins.manifest.layers.iter().map(|l| l.size).sum();
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "reference": r.to_string(),
                        "manifest_digest": ins.manifest_digest,
                        "manifest_size": ins.manifest_size,
                        "signature": ins.verification,
                        "layers_size": total,
                        "manifest": ins.manifest,
                    })
                );
            } else {
                println!("reference:  {r}");
                println!(
                    "manifest:   {} ({} bytes)",
                    ins.manifest_digest, ins.manifest_size
                );
                println!("signature:  {}", describe(&ins.verification));
                println!(
                    "agent:      {} {}",
                    ins.manifest.agent.name, ins.manifest.agent.version
                );
                println!("created:    {}", ins.manifest.created_at);
                for p in &ins.manifest.parents {
                    println!("parent:     {p}");
                }
                println!(
                    "layers:     {} ({} bytes)",
                    ins.manifest.layers.len(),
                    total
                );
                for l in &ins.manifest.layers {
                    println!(
                        "  {:<16} {:>12}  {}  {}",
                        l.role, l.size, l.digest, l.media_type
                    );
                }
                for (k, v) in &ins.manifest.annotations {
                    println!("annotation: {k}={v}");
                }
            }
            Ok(0)
        }
        Cmd::Copy { src, dst, trust } => {
            let (s, d) = (parse_ref(src)?, parse_ref(dst)?);
            let cfg = config(&cli, trust)?;
            let store = open_store(&cli, pf_cas::Durability::Deferred)?;
            let pulled = pf_registry::open(&s, &cfg)?.pull(store.clone()).await?;
            note(
                &cli,
                format!("source signature: {}", describe(&pulled.verification)),
            );
            let rep = pf_registry::open(&d, &cfg)?
                .push(store, &pulled.signed_image())
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            } else {
                println!("{}", rep.resolved);
                note(
                    &cli,
                    format!(
                        "copied {} ({} of {} blobs uploaded)",
                        rep.manifest_digest, rep.blobs_uploaded, rep.blobs_total
                    ),
                );
            }
            Ok(0)
        }
    }
}

fn snapshot_image(
    cli: &Cli,
    dir: &Path,
    store: &DirStore,
    source: &source::SourceStore,
    agent: &str,
    parents: &[String],
    annotations: &[String],
) -> CliResult<Manifest> {
    let mut m = Manifest::new(
        AgentInfo {
            name: agent.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        now_rfc3339(),
    );
    for p in parents {
        m.parents
            .push(Digest::parse(p).map_err(|e| CliError::Usage(format!("--parent: {e}")))?);
    }
    for a in annotations {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--annotation {a:?} is not KEY=VALUE")))?;
        m.annotations.insert(k.into(), v.into());
    }
    let mut warnings = Vec::new();
    let dir_abs =
        std::fs::canonicalize(dir).map_err(io_ctx(format!("resolving {}", dir.display())))?;
    let cache_path = store.root().join("statcache.json");
    let mut cache = snapshot::StatCache::load(&cache_path);
    let tree = snapshot::snapshot_dir(&dir_abs, source, &mut cache, &mut |w| warnings.push(w))?;
    cache.save(&cache_path)?;
    for w in warnings {
        note(cli, format!("warning: {w}"));
    }
    let bytes = tree.to_bytes();
    let d = store.put(&bytes)?;
    m.layers.push(Descriptor {
        role: "world.fs".into(),
        media_type: FS_TREE_MEDIA_TYPE.into(),
        digest: d,
        size: bytes.len() as u64,
    });
    Ok(m)
}

/// Maps an I/O error to a [`RegistryError`] saying what was being done.
pub(crate) fn io_ctx(ctx: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |e| RegistryError::io(ctx, e)
}

/// Current UTC time as RFC 3339 (seconds), without a date crate.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}
