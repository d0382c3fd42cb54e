//! `pf`: push, pull, inspect and copy ProcessFork snapshots.
//!
//! The command lives in this library so that tools (`cargo xtask man`) can
//! reach its clap definition through [`command`]; the `pf` binary only calls
//! [`main`].
#![forbid(unsafe_code)]

mod browse;
mod cli;
mod crypt;
mod display;
mod exit;
mod lifecycle;
mod options;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use cli::{Cli, Cmd};
use display::{clean, clean_display};
use pf_cas::DirStore;
use pf_registry::{
    Config, Digest, ImageRef, PublicKey, RegistryError, SignedImage, SigningKey, TrustPolicy,
    Verification,
};
use pf_snapshot::{restore, SnapshotOptions};
use serde_json::json;

/// Errors of the CLI itself (usage and local input), exit code 1.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Sign(#[from] pf_sign::SignError),
    #[error(transparent)]
    Crypt(#[from] pf_crypt::CryptError),
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
            CliError::Crypt(e) => crypt::exit_code(e),
        }
    }
}

impl From<pf_cas::CasError> for CliError {
    fn from(e: pf_cas::CasError) -> Self {
        CliError::Registry(e.into())
    }
}

type CliResult<T> = std::result::Result<T, CliError>;

/// The `pf` command's clap definition (every subcommand and flag), for man
/// pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs `pf` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
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
    let json_progress = cli.progress == progress::ProgressMode::Json;
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            }
            if json_progress {
                eprintln!(
                    "{}",
                    json!({"kind": "error", "error": e.to_string(), "exit_code": e.exit_code()})
                );
            } else {
                eprintln!("pf: error: {}", clean_display(&e));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// `$XDG_CACHE_HOME/pf-registry/store`, else `$HOME/.cache/pf-registry/store`.
/// With neither set there is no default: a store in a shared temporary
/// directory could be planted by another user.
fn default_store() -> CliResult<PathBuf> {
    let set = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    set("XDG_CACHE_HOME")
        .or_else(|| set("HOME").map(|h| h.join(".cache")))
        .map(|base| base.join("pf-registry").join("store"))
        .ok_or_else(|| {
            CliError::Usage(
                "no local store: HOME and XDG_CACHE_HOME are unset; pass --store DIR or set PF_STORE"
                    .into(),
            )
        })
}

fn parse_ref(s: &str) -> CliResult<ImageRef> {
    Ok(ImageRef::parse(s)?)
}

fn config(cli: &Cli, trust: &[PathBuf]) -> CliResult<Config> {
    let mut c = Config {
        zstd_level: cli.zstd_level,
        insecure: cli.insecure,
        ca_file: cli.ca_file.clone(),
        progress: progress::for_mode(cli.progress, !cli.quiet && !cli.json),
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
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    // `-o` keys are checked against the backend; PF_OPTION_* ones fill in.
    c.options = options::collect(&cli.options, []).map_err(CliError::Usage)?;
    c.env_options = options::collect(&[], env).map_err(CliError::Usage)?;
    if let Some(t) = c.option("hf.repo_type") {
        note(
            cli,
            format!(
                "note: -o hf.repo_type is deprecated; write the type in the reference \
                 (hf://owner/repo is a model, hf://datasets/owner/repo, hf://spaces/owner/repo; \
                 hf.repo_type={t} applies only to hf://owner/repo)"
            ),
        );
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
    let root = match &cli.store {
        Some(s) => s.clone(),
        None => default_store()?,
    };
    Ok(Arc::new(DirStore::open(root)?.with_durability(durability)))
}

fn describe(v: &Verification) -> String {
    match v {
        Verification::Verified { key_id } => format!("verified (key {key_id})"),
        Verification::Unsigned => "UNSIGNED (no signature; pass --trust to require one)".into(),
        Verification::UnknownKey { key_id } => {
            format!("signed by unknown key {key_id} (not verified; pass --trust to verify)")
        }
        other => other.to_string(),
    }
}

/// After a push to `oci://` signed with an ECDSA P-256 key, writes the
/// cosign signature of the pushed OCI manifest: its reference and report
/// (`None` for other keys and destinations).
#[cfg(feature = "oci")]
async fn cosign_sign(
    dst: &ImageRef,
    cfg: &Config,
    rep: &pf_registry::PushReport,
    key: Option<&SigningKey>,
) -> CliResult<Option<(String, serde_json::Value)>> {
    let Some(key) = key.filter(|k| k.algorithm() == pf_sign::Algorithm::EcdsaP256Sha256) else {
        return Ok(None);
    };
    if dst.scheme() != "oci" {
        return Ok(None);
    }
    let Some(image) = ImageRef::parse(&rep.resolved)?.digest else {
        return Err(CliError::Registry(RegistryError::invalid(
            "push result",
            "no OCI manifest digest to sign",
        )));
    };
    let c = pf_registry::cosign::sign(dst, cfg, image, key).await?;
    Ok(Some((
        c.signature_ref.clone(),
        serde_json::to_value(&c).unwrap_or_default(),
    )))
}

#[cfg(not(feature = "oci"))]
async fn cosign_sign(
    _: &ImageRef,
    _: &Config,
    _: &pf_registry::PushReport,
    _: Option<&SigningKey>,
) -> CliResult<Option<(String, serde_json::Value)>> {
    Ok(None)
}

/// Under `--progress=json` stderr carries only JSON lines, so notes are dropped.
fn note(cli: &Cli, msg: impl AsRef<str>) {
    if !cli.quiet && cli.progress != progress::ProgressMode::Json {
        eprintln!("{}", clean(msg.as_ref()));
    }
}

async fn run(cli: Cli) -> CliResult<u8> {
    match &cli.cmd {
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "pf", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Lifecycle(c) => lifecycle::run(&cli, c).await,
        Cmd::Keygen {
            out,
            cosign,
            encryption,
        } => {
            if *encryption {
                let out = out.clone().unwrap_or_else(|| PathBuf::from("pf-crypt"));
                return crypt::keygen(&cli, &out);
            }
            let (alg, default) = if *cosign {
                (pf_sign::Algorithm::EcdsaP256Sha256, "cosign")
            } else {
                (pf_sign::Algorithm::Ed25519, "pf-signing")
            };
            let out = out.clone().unwrap_or_else(|| PathBuf::from(default));
            let key = SigningKey::generate_for(alg)?;
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
                println!("private key: {}", clean_display(priv_path.display()));
                println!("public key:  {}", clean_display(pub_path.display()));
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
            chunker,
            encrypt_to,
        } => {
            let r = parse_ref(reference)?;
            let cfg = config(&cli, &[])?;
            let key = key.as_deref().map(SigningKey::load).transpose()?;
            // The snapshot only writes its fs tree blob to the store (fsynced);
            // file contents are read from `dir` itself while pushing.
            let store = open_store(&cli, pf_cas::Durability::EachBlob)?;
            let mut opts = snapshot_options(&store, agent, parent, annotation)?;
            if let Some(c) = chunker {
                opts.chunking = *c;
            }
            let reg = pf_registry::open(&r, &cfg)?;
            // Chunks the last push from this directory to this destination
            // sent are referenced, not sent again (format v2).
            let book_path = store.root().join("bases.json");
            let dir_abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let mut book = pf_snapshot::BaseBook::load(&book_path);
            // Per repository, not per tag: versions pushed under new tags
            // share the repository's packs. A relative file:// path is made
            // absolute, so the key does not depend on the working directory.
            let dest = match &r.location {
                pf_registry::Location::File { path } => format!(
                    "file://{}",
                    std::fs::canonicalize(path)
                        .unwrap_or_else(|_| PathBuf::from(path))
                        .display()
                ),
                _ => r.repository_key(),
            };
            if !encrypt_to.is_empty() {
                let to = crypt::Destination {
                    key: key.as_ref(),
                    recipient_files: encrypt_to,
                    location: &dest,
                };
                let rep = crypt::push(&cli, dir, &*reg, &store, opts, to).await?;
                let cosigned = cosign_sign(&r, &cfg, &rep, key.as_ref()).await?;
                print_push(&cli, &rep, cosigned.as_ref());
                return Ok(0);
            }
            // Read only if the snapshot needs it (the tree memo skips it
            // for an unchanged directory).
            opts.base_stored = book.base_digest(&dir_abs, &dest);
            // A destination on a local filesystem takes packs encoded
            // while the snapshot reads them back, so its disk writes start
            // while later files are still being chunked.
            opts.encode_ahead = reg.encode_ahead();
            let t0 = std::time::Instant::now();
            let mut snap = pf_snapshot::snapshot(dir, store.clone(), &opts)?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "snapshot hashed");
            let mut signed = SignedImage::new(&snap.manifest, key.as_ref());
            let mut res = reg.push(snap.source.clone(), &signed).await;
            if opts.base_stored.is_some() && matches!(res, Err(RegistryError::NotFound { .. })) {
                // The destination no longer holds a pack of the base (a gc,
                // a reset repository): chunk against nothing and push again.
                note(
                    &cli,
                    "the previous push's packs are gone from the destination; sending every chunk",
                );
                opts.base_stored = None;
                snap = pf_snapshot::snapshot(dir, store.clone(), &opts)?;
                signed = SignedImage::new(&snap.manifest, key.as_ref());
                res = reg.push(snap.source.clone(), &signed).await;
            }
            for w in &snap.warnings {
                note(&cli, format!("warning: {w}"));
            }
            let rep = res?;
            book.record(&dir_abs, &dest, &snap.manifest);
            if let Err(e) = book.save(&book_path) {
                note(&cli, format!("warning: {e}"));
            }
            let cosigned = cosign_sign(&r, &cfg, &rep, key.as_ref()).await?;
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "pushed");
            print_push(&cli, &rep, cosigned.as_ref());
            Ok(0)
        }
        Cmd::Pull {
            reference,
            into,
            include,
            max_size,
            trust,
            identity,
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
            if !identity.is_empty() {
                let mut opts = restore::RestoreOptions::default().with_include(include.clone());
                opts.max_size = *max_size;
                return crypt::pull(&cli, &*reg, store, into.as_deref(), opts, identity).await;
            }
            let (rep, restored, skipped) = match into {
                None => {
                    let rep = reg.pull(store.clone()).await?;
                    // Deferred durability: one syncfs for the whole pull.
                    store.sync()?;
                    (rep, None, 0)
                }
                Some(dest) => {
                    let mut opts = restore::RestoreOptions::default().with_include(include.clone());
                    opts.max_size = *max_size;
                    if !cli.quiet && !cli.json && cli.progress != progress::ProgressMode::Json {
                        let shown = clean_display(dest.display());
                        opts.on_total = Some(Arc::new(move |total| {
                            eprintln!("restoring {total} bytes into {shown}");
                        }));
                    }
                    let rep = restore::pull_into_dir(&*reg, store.clone(), dest, &opts).await?;
                    (rep.pull, Some(rep.restored_bytes), rep.blobs_skipped)
                }
            };
            if let (Some(dest), true) = (into, pf_crypt::is_encrypted(&rep.manifest)) {
                // Nothing was restored (the outer image has no fs tree).
                let _ = std::fs::remove_dir(dest);
                return Err(need_identity(&*store, &rep.manifest));
            }
            if cli.json {
                let mut v = serde_json::to_value(&rep).unwrap_or_default();
                v["restored_bytes"] = json!(restored);
                v["blobs_skipped"] = json!(skipped);
                println!("{v}");
            } else {
                println!("{}", rep.manifest_digest);
                note(&cli, format!("signature: {}", describe(&rep.verification)));
                note(
                    &cli,
                    format!(
                        "pulled {} blobs ({} fetched, {} already local, {} not needed, {} bytes received)",
                        rep.blobs_total,
                        rep.blobs_fetched,
                        rep.blobs_present.saturating_sub(skipped),
                        skipped,
                        rep.wire_bytes_fetched
                    ),
                );
                if let (Some(d), Some(b)) = (into, restored) {
                    note(&cli, format!("restored {b} bytes into {}", d.display()));
                }
            }
            Ok(0)
        }
        Cmd::Cat {
            reference,
            path,
            trust,
            identity,
        } => browse::cat(&cli, reference, path, trust, identity).await,
        Cmd::Ls {
            reference,
            path,
            trust,
            identity,
        } => browse::ls(&cli, reference, path.as_deref(), trust, identity).await,
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
                // Everything below came from the repository: escaped.
                println!("reference:  {}", clean_display(&r));
                println!(
                    "manifest:   {} ({} bytes)",
                    ins.manifest_digest, ins.manifest_size
                );
                println!("signature:  {}", describe(&ins.verification));
                println!(
                    "agent:      {} {}",
                    clean(&ins.manifest.agent.name),
                    clean(&ins.manifest.agent.version)
                );
                println!("created:    {}", clean(&ins.manifest.created_at));
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
                        clean(&l.role),
                        l.size,
                        l.digest,
                        clean(&l.media_type)
                    );
                }
                for (k, v) in &ins.manifest.annotations {
                    println!("annotation: {}={}", clean(k), clean(v));
                }
            }
            Ok(0)
        }
        Cmd::Copy { src, dst, trust } => {
            let (s, d) = (parse_ref(src)?, parse_ref(dst)?);
            let cfg = config(&cli, trust)?;
            let store = open_store(&cli, pf_cas::Durability::Deferred)?;
            let (from, to) = pf_registry::open_pair(&s, &d, &cfg)?;
            let pulled = from.pull(store.clone()).await?;
            note(
                &cli,
                format!("source signature: {}", describe(&pulled.verification)),
            );
            let rep = to.push(store, &pulled.signed_image()).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            } else {
                println!("{}", clean(&rep.resolved));
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

/// Snapshot options from the push arguments; the stat cache lives in the store.
fn snapshot_options(
    store: &DirStore,
    agent: &str,
    parents: &[String],
    annotations: &[String],
) -> CliResult<SnapshotOptions> {
    let mut o = SnapshotOptions::new(agent, env!("CARGO_PKG_VERSION"));
    o.stat_cache = Some(store.root().join("statcache.json"));
    for p in parents {
        o.parents
            .push(Digest::parse(p).map_err(|e| CliError::Usage(format!("--parent: {e}")))?);
    }
    for a in annotations {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--annotation {a:?} is not KEY=VALUE")))?;
        o.annotations.insert(k.into(), v.into());
    }
    Ok(o)
}

/// The error for an encrypted image pulled with `--into` but no
/// `--identity`: it names the key ids the envelope lists.
fn need_identity(store: &dyn pf_cas::BlobStore, outer: &pf_registry::Manifest) -> CliError {
    match pf_crypt::open_image(outer, store, None, u64::MAX) {
        Err(e) => e.into(),
        Ok(_) => CliError::Usage("the image is encrypted: pass --identity FILE".into()),
    }
}

/// Prints a push report (the resolved reference, then a note), with the
/// cosign signature written, if any.
fn print_push(
    cli: &Cli,
    rep: &pf_registry::PushReport,
    cosigned: Option<&(String, serde_json::Value)>,
) {
    if cli.json {
        match cosigned {
            None => println!("{}", serde_json::to_string(rep).unwrap_or_default()),
            Some((_, c)) => {
                let mut v = serde_json::to_value(rep).unwrap_or_default();
                v["cosign"] = c.clone();
                println!("{v}");
            }
        }
    } else {
        println!("{}", clean(&rep.resolved));
        if let Some((at, _)) = cosigned {
            note(cli, format!("cosign signature: {at}"));
        }
        note(
            cli,
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
}
