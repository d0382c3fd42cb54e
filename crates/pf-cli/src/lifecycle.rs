//! `pf tags`, `log`, `diff`, `rm`, `retain`, `gc`, `verify`: thin wrappers
//! over `pf_registry::lifecycle`.

use std::path::PathBuf;

use clap::Subcommand;
use pf_registry::lifecycle::{self, GcOptions, Inventory, ReadData, RetainPolicy};
use pf_registry::{Digest, ImageRef, Location, Transport};
use serde_json::json;

use crate::display::clean;
use crate::{config, parse_ref, Cli, CliResult};

/// The lifecycle subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum LifecycleCmd {
    /// List REPO's tags: manifest digest, created time, size, signer.
    #[command(after_help = "Example:\n  pf tags s3://bucket/agents --json")]
    Tags {
        /// Repository reference (a tag in it is ignored).
        repo: String,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
    /// The version history of REF through its parents, newest first.
    #[command(after_help = "Example:\n  pf log file:///mnt/usb/agent:latest")]
    Log {
        /// Reference.
        reference: String,
    },
    /// Files added, removed and changed from A to B (from the fs trees; no
    /// file content is downloaded) and the bytes moving from A to B fetches.
    #[command(after_help = "Example:\n  pf diff s3://bucket/agents:v1 s3://bucket/agents:v2")]
    Diff {
        /// The older image.
        a: String,
        /// The newer image.
        b: String,
    },
    /// Delete a tag (REF with a tag, or the untagged head), or a manifest
    /// and its tags (REF@sha256:...). Blobs go at the next `pf gc`.
    #[command(
        after_help = "Example:\n  pf rm s3://bucket/agents:old\n  pf rm file:///mnt/usb/agent@sha256:<64 hex>"
    )]
    Rm {
        /// Reference.
        reference: String,
    },
    /// Keep the versions a policy names and remove the other manifests and
    /// their tags (blobs go at the next `pf gc`).
    #[command(
        after_help = "Example:\n  pf retain s3://bucket/agents --keep-last 10 --keep-within 7d --keep-tag prod"
    )]
    Retain {
        /// Repository reference.
        repo: String,
        /// Keep the newest N versions.
        #[arg(long)]
        keep_last: Option<usize>,
        /// Keep versions created within this long (e.g. 7d, 12h).
        #[arg(long, value_parser = lifecycle::parse_duration)]
        keep_within: Option<std::time::Duration>,
        /// Keep the version this tag points at; repeatable.
        #[arg(long)]
        keep_tag: Vec<String>,
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete blobs no committed manifest references, older than the grace
    /// period. Safe while pushes run (no lock; see the README).
    #[command(
        after_help = "Example:\n  pf gc s3://bucket/agents --dry-run\n  pf gc file:///mnt/usb/agent --grace 2h"
    )]
    Gc {
        /// Repository reference.
        repo: String,
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep blobs modified more recently than this.
        #[arg(long, default_value = "1h", value_parser = lifecycle::parse_duration)]
        grace: std::time::Duration,
        /// hf only: then squash the branch's history (the Hub's
        /// super-squash), so deleted files stop taking storage. Every older
        /// revision, and every `hf://...@<commit>` printed before, stops
        /// resolving.
        #[arg(long, conflicts_with = "dry_run")]
        squash_history: bool,
    },
    /// Check that every blob of REF is stored (exit 4 when any is missing
    /// or corrupt); with --read-data re-hash stored bytes, without restoring.
    #[command(
        after_help = "Example:\n  pf verify s3://bucket/agents --all --read-data-subset 10%"
    )]
    Verify {
        /// Reference.
        reference: String,
        /// Re-read and hash every blob.
        #[arg(long, conflicts_with = "read_data_subset")]
        read_data: bool,
        /// Re-read and hash this share of the blobs, e.g. 10%.
        #[arg(long, value_parser = parse_percent)]
        read_data_subset: Option<f64>,
        /// Verify every tag of the repository.
        #[arg(long)]
        all: bool,
        /// Trusted public key file; repeatable (comma-separated in PF_TRUST).
        #[arg(long, env = "PF_TRUST", value_delimiter = ',')]
        trust: Vec<PathBuf>,
    },
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 10%)"))?;
    if n > 0.0 && n <= 100.0 {
        Ok(n)
    } else {
        Err(format!("{s:?} is outside (0, 100]"))
    }
}

fn tag_of(r: &ImageRef) -> Option<&str> {
    match &r.location {
        Location::S3 { tag, .. } | Location::Oci { tag, .. } => tag.as_deref(),
        _ => None,
    }
}

fn show_tag(t: &Option<String>) -> String {
    t.as_deref()
        .map(|s| clean(s).into_owned())
        .unwrap_or_else(|| "(untagged)".into())
}

fn open(
    cli: &Cli,
    reference: &str,
    trust: &[PathBuf],
) -> CliResult<(ImageRef, Box<dyn Transport>, pf_registry::Config)> {
    let r = parse_ref(reference)?;
    let cfg = config(cli, trust)?;
    let t = pf_registry::transport(&r, &cfg)?;
    Ok((r, t, cfg))
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Runs one lifecycle command; returns the exit code.
pub(crate) async fn run(cli: &Cli, cmd: &LifecycleCmd) -> CliResult<u8> {
    match cmd {
        LifecycleCmd::Tags { repo, trust } => {
            let (_, t, cfg) = open(cli, repo, trust)?;
            let tags = lifecycle::tags(&*t, &cfg.trust).await?;
            if cli.json {
                print_json(&tags);
            } else {
                for x in &tags {
                    println!(
                        "{:<24} {} {} {:>12} {}",
                        show_tag(&x.tag),
                        x.digest,
                        clean(&x.created_at),
                        x.size,
                        clean(&x.signer)
                    );
                }
            }
            Ok(0)
        }
        LifecycleCmd::Log { reference } => {
            let (_, t, _) = open(cli, reference, &[])?;
            let log = lifecycle::log(&*t).await?;
            if cli.json {
                print_json(&log);
            } else {
                for v in &log {
                    println!("{} {}", v.digest, clean(&v.created_at));
                    for p in &v.missing_parents {
                        println!("  parent {p} (not in this repository)");
                    }
                }
            }
            Ok(0)
        }
        LifecycleCmd::Diff { a, b } => {
            let (_, ta, _) = open(cli, a, &[])?;
            let (_, tb, _) = open(cli, b, &[])?;
            let d = lifecycle::diff(&*ta, &*tb).await?;
            if cli.json {
                print_json(&d);
            } else {
                for (mark, list) in [
                    ("+", &d.added),
                    ("-", &d.removed),
                    ("M", &d.changed),
                    ("?", &d.maybe_changed),
                ] {
                    for f in list {
                        println!("{mark} {}", clean(&f.path));
                    }
                }
                println!(
                    "{} added, {} removed, {} changed, {} packed files not compared (?); {} blobs, {} bytes to transfer",
                    d.added.len(),
                    d.removed.len(),
                    d.changed.len(),
                    d.maybe_changed.len(),
                    d.blobs_to_transfer,
                    d.bytes_to_transfer
                );
            }
            Ok(0)
        }
        LifecycleCmd::Rm { reference } => {
            let (r, t, _) = open(cli, reference, &[])?;
            let rep = lifecycle::rm(&*t, tag_of(&r), r.digest).await?;
            if cli.json {
                print_json(&rep);
            } else {
                for tg in &rep.tags {
                    println!("removed tag {}", show_tag(tg));
                }
                for m in &rep.manifests {
                    println!("removed manifest {m}");
                }
            }
            Ok(0)
        }
        LifecycleCmd::Retain {
            repo,
            keep_last,
            keep_within,
            keep_tag,
            dry_run,
        } => {
            let (_, t, _) = open(cli, repo, &[])?;
            let policy = RetainPolicy {
                keep_last: *keep_last,
                keep_within: *keep_within,
                keep_tags: keep_tag.clone(),
                dry_run: *dry_run,
            };
            let rep = lifecycle::retain(&*t, &policy).await?;
            if cli.json {
                print_json(&rep);
            } else {
                let verb = if *dry_run { "would remove" } else { "removed" };
                for d in &rep.kept {
                    println!("keep   {d}");
                }
                for d in &rep.removed {
                    println!("{verb} {d}");
                }
            }
            Ok(0)
        }
        LifecycleCmd::Gc {
            repo,
            dry_run,
            grace,
            squash_history,
        } => {
            let (_, t, _) = open(cli, repo, &[])?;
            let rep = lifecycle::gc(
                &*t,
                &GcOptions {
                    grace: *grace,
                    dry_run: *dry_run,
                    squash_history: *squash_history,
                },
            )
            .await?;
            if cli.json {
                print_json(&rep);
            } else {
                println!(
                    "{} manifests, {} blobs ({} referenced); {} {} blobs ({} bytes); kept {} in progress, {} younger than the grace",
                    rep.manifests,
                    rep.blobs,
                    rep.referenced,
                    if *dry_run { "would delete" } else { "deleted" },
                    rep.deleted.len(),
                    rep.deleted_bytes,
                    rep.kept_in_progress,
                    rep.kept_young
                );
                if rep.squashed_history {
                    println!("squashed the history: older revisions no longer resolve");
                }
                if rep.deferred > 0 {
                    println!("{} left for the next run (deadline reached)", rep.deferred);
                }
                if rep.packs_partly_dead > 0 {
                    println!(
                        "{} packs still in use hold {} bytes of chunks no kept image uses; \
                         not repacked (an image's digest covers where its chunks lie), \
                         freed when the images using those packs are removed",
                        rep.packs_partly_dead, rep.dead_bytes_in_live_packs
                    );
                }
            }
            Ok(0)
        }
        LifecycleCmd::Verify {
            reference,
            read_data,
            read_data_subset,
            all,
            trust,
        } => {
            let (r, t, cfg) = open(cli, reference, trust)?;
            let read = match (read_data, read_data_subset) {
                (true, _) => ReadData::All,
                (false, Some(p)) => ReadData::Subset(*p),
                (false, None) => ReadData::None,
            };
            let targets: Vec<Option<Digest>> = if *all {
                let inv = Inventory::read(&*t).await?;
                let mut ds: Vec<Digest> = inv.tags.values().copied().collect();
                ds.sort();
                ds.dedup();
                ds.into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            let mut reports = Vec::new();
            for d in targets {
                let rep = match d {
                    None => lifecycle::verify(&*t, &cfg.trust, read).await?,
                    Some(d) => {
                        let mut p = r.clone();
                        p.digest = Some(d);
                        let pt = pf_registry::transport(&p, &cfg)?;
                        lifecycle::verify(&*pt, &cfg.trust, read).await?
                    }
                };
                reports.push(rep);
            }
            let bad = reports.iter().any(|r| !r.ok());
            if cli.json {
                print_json(&json!({"ok": !bad, "images": reports}));
            } else {
                for rep in &reports {
                    let m = rep.manifest.map(|d| d.to_string()).unwrap_or_default();
                    println!(
                        "{m}: {} blobs, {} re-read, {} missing, {} corrupt ({})",
                        rep.blobs,
                        rep.data_checked,
                        rep.missing.len(),
                        rep.corrupt.len(),
                        clean(&rep.signer)
                    );
                    for d in &rep.missing {
                        println!("  missing {d}");
                    }
                    for (d, why) in &rep.corrupt {
                        println!("  corrupt {d}: {}", clean(why));
                    }
                }
            }
            Ok(if bad { 4 } else { 0 })
        }
    }
}
