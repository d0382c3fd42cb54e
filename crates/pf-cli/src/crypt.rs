//! `pf keygen --encryption`, `pf push --encrypt-to`, `pf pull --identity`:
//! the CLI side of pf-crypt (see that crate for the format).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pf_cas::{BlobStore, DirStore};
use pf_crypt::{Identity, KeyBook, Recipient};
use pf_registry::{PushReport, Registry, RegistryError, SignedImage, SigningKey};
use pf_snapshot::{restore, SnapshotOptions};
use serde_json::json;

use crate::cli::Cli;
use crate::display::{clean, clean_display};
use crate::{note, CliResult};

/// The data keys file in the local store.
const KEY_BOOK: &str = "crypt-keys.json";

/// Bytes of compressed sealed packs a push holds in memory for its upload
/// before it writes the rest to the local store (packs that do not
/// compress are sealed again as they are uploaded instead; see
/// [`pf_crypt::image::PushSource`]).
const STAGING_BUDGET: u64 = 256 << 20;

/// The exit code of a pf-crypt error: 4 for anything about sealed data or
/// the identity, 1 for unusable local key files.
pub(crate) fn exit_code(e: &pf_crypt::CryptError) -> u8 {
    use pf_crypt::CryptError as E;
    match e {
        E::Registry(r) => crate::exit::code(r),
        E::BadKeyFile(_) | E::Io { .. } => 1,
        E::Random => 5,
        _ => 4,
    }
}

/// The store again with deferred durability: sealing and opening write
/// every pack into it, so one `syncfs` at the end replaces an fsync per
/// blob (pf_cas::Durability).
fn deferred(store: &DirStore) -> CliResult<Arc<DirStore>> {
    Ok(Arc::new(
        DirStore::open(store.root())?.with_durability(pf_cas::Durability::Deferred),
    ))
}

/// Writes OUT.identity (0600) and OUT.recipient.
pub(crate) fn keygen(cli: &Cli, out: &Path) -> CliResult<u8> {
    let id = Identity::generate()?;
    let (ip, rp) = (
        out.with_extension("identity"),
        out.with_extension("recipient"),
    );
    id.save(&ip)?;
    id.recipient().save(&rp)?;
    if cli.json {
        println!(
            "{}",
            json!({"key_id": id.key_id().to_string(), "identity": ip, "recipient": rp})
        );
    } else {
        println!("key id:    {}", id.key_id());
        println!("identity:  {}", clean_display(ip.display()));
        println!("recipient: {}", clean_display(rp.display()));
    }
    Ok(0)
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> CliResult<R> + Send + 'static,
) -> CliResult<R> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(RegistryError::io("encryption", std::io::Error::other(e.to_string())).into())
    })
}

/// Where and for whom an encrypted push seals.
pub(crate) struct Destination<'a> {
    /// Signs the outer manifest.
    pub key: Option<&'a SigningKey>,
    /// `--encrypt-to` files.
    pub recipient_files: &'a [PathBuf],
    /// The repository key the base and key books use.
    pub location: &'a str,
}

/// Snapshots `dir`, seals it for `recipients` and pushes the outer image.
/// The data key of `location` (the repository, as the base book keys it)
/// is reused from the local key book (dedup across versions and tags);
/// the first push makes one.
pub(crate) async fn push(
    cli: &Cli,
    dir: &Path,
    reg: &dyn Registry,
    store: &Arc<DirStore>,
    mut opts: SnapshotOptions,
    to: Destination<'_>,
) -> CliResult<PushReport> {
    let Destination {
        key,
        recipient_files,
        location,
    } = to;
    let recipients = recipient_files
        .iter()
        .map(|p| Recipient::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The snapshot's trees go into the store as a plain push's do; sealed
    // packs go into it with deferred durability and no sync: they are a
    // cache of what the destination gets (a damaged copy is re-hashed and
    // refused on read), and losing them only costs the next push its base.
    let sealed_store = deferred(store)?;
    let book_path = store.root().join(KEY_BOOK);
    let mut keys = KeyBook::load(&book_path)?;
    let data_key = match keys.key(location) {
        Some(k) => k,
        None => pf_crypt::DataKey::generate()?,
    };
    keys.set_key(location, &data_key);
    // Saved before anything is pushed: a destination never holds chunks
    // sealed under a key the pusher lost.
    keys.save(&book_path)?;
    let bases_path = store.root().join("bases.json");
    let dir_abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut bases = pf_snapshot::BaseBook::load(&bases_path);
    let seals = keys.seals(&**store, location);
    opts.base = bases
        .base(&**store, &dir_abs, location)
        .filter(|t| pf_crypt::image::covers(&seals, t));
    // Inner packs are sealed chunk by chunk, never stored as they are:
    // named by their chunks, they need no read-back pass to hash.
    opts.pack_names = pf_snapshot::PackNames::Chunks;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let base_seals = if opts.base.is_some() {
            seals.clone()
        } else {
            Vec::new()
        };
        let t0 = std::time::Instant::now();
        let snap = pf_snapshot::snapshot(dir, store.clone(), &opts)?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "snapshot hashed");
        for w in &snap.warnings {
            note(cli, format!("warning: {w}"));
        }
        let (src, spill, dk) = (snap.source.clone(), sealed_store.clone(), data_key.clone());
        let (inner, rs, level) = (snap.manifest.clone(), recipients.clone(), cli.zstd_level);
        let ahead = reg.encode_ahead();
        let (sealed, staging) = blocking(move || {
            Ok(pf_crypt::image::seal_for_push(
                &inner,
                src,
                &dk,
                &rs,
                &base_seals,
                level,
                spill,
                STAGING_BUDGET,
                ahead,
            )?)
        })
        .await?;
        staging.persist(&sealed.index)?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "sealed");
        let signed = SignedImage::new(&sealed.manifest, key);
        let source: Arc<dyn BlobStore> = staging.clone();
        match reg.push(source, &signed).await {
            Err(RegistryError::NotFound { .. }) if opts.base.is_some() && attempt == 1 => {
                note(
                    cli,
                    "the previous push's packs are gone from the destination; sending every chunk",
                );
                opts.base = None;
            }
            Err(e) => return Err(e.into()),
            Ok(rep) => {
                tracing::debug!(ms = t0.elapsed().as_millis() as u64, "pushed");
                bases.record(&dir_abs, location, &snap.manifest);
                if let Err(e) = bases.save(&bases_path) {
                    note(cli, format!("warning: {e}"));
                }
                keys.record(location, sealed.index);
                keys.save(&book_path)?;
                return Ok(rep);
            }
        }
    }
}

/// Loads `--identity` files.
pub(crate) fn load_identities(files: &[PathBuf]) -> CliResult<Vec<Identity>> {
    Ok(files
        .iter()
        .map(|p| Identity::load(p))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Pulls REF with `identities` (signature checked first, by the engine):
/// restores `into` as the packs arrive, or opens the image into the store.
pub(crate) async fn pull(
    cli: &Cli,
    reg: &dyn Registry,
    store: Arc<DirStore>,
    into: Option<&Path>,
    opts: restore::RestoreOptions,
    identities: &[PathBuf],
) -> CliResult<u8> {
    let ids = load_identities(identities)?;
    let (rep, restored) = match into {
        // Each sealed pack is opened as it arrives and written straight
        // into place, as a plain pull restores; only the envelope, the
        // sealed index and the trees are stored.
        Some(d) => {
            let store: Arc<dyn BlobStore> = store;
            let (rep, n) = pf_crypt::pull::pull_into_dir(reg, store, d, &opts, &ids).await?;
            (rep, Some(n))
        }
        // No restore: the sealed, then the opened packs go into the store.
        None => {
            let store = deferred(&store)?;
            let rep = reg.pull(store.clone()).await?;
            let outer = rep.manifest.clone();
            blocking(move || {
                if pf_crypt::is_encrypted(&outer) {
                    let env = pf_crypt::image::envelope(&outer, &*store)?;
                    let id = pf_crypt::image::pick(&env, &ids);
                    pf_crypt::open_image(&outer, &*store, id, opts.max_size)?;
                }
                store.sync()?;
                Ok(())
            })
            .await?;
            (rep, None)
        }
    };
    if cli.json {
        let mut v = serde_json::to_value(&rep).unwrap_or_default();
        v["restored_bytes"] = json!(restored);
        v["encrypted"] = json!(pf_crypt::is_encrypted(&rep.manifest));
        println!("{v}");
    } else {
        println!("{}", rep.manifest_digest);
        note(
            cli,
            format!("signature: {}", crate::describe(&rep.verification)),
        );
        note(
            cli,
            format!(
                "pulled {} blobs ({} fetched, {} bytes received), decrypted",
                rep.blobs_total, rep.blobs_fetched, rep.wire_bytes_fetched
            ),
        );
        if let (Some(d), Some(b)) = (into, restored) {
            note(
                cli,
                format!(
                    "restored {b} bytes into {}",
                    clean(&d.display().to_string())
                ),
            );
        }
    }
    Ok(0)
}
