//! The peer scenarios: pf beside `tar | zstd`, restic and borg on the same
//! data, each tool reset to the same saved state before every timed run,
//! runs interleaved (tar, pf, restic, borg, tar, ...): edits in place and
//! appends (bytes sent = repository growth), restores of each edited
//! version with the previous one local, many small files, and pf alone at
//! a large `--size` for peak RSS.

use std::path::Path;

use super::edits::{self, Edit, Versions};
use super::measure::{paired_ratio, timed, Job, Runner};
use super::peers::{Peers, Tool, ALL};
use super::{data, Summary};

/// Runs `cmd` untimed, with what it is for in the error.
fn prep(what: &str, cmd: &str) -> Result<(), String> {
    timed(cmd).map(|_| ()).map_err(|e| format!("{what}: {e}"))
}

/// Paired time ratios `tool / pf` (how many times faster pf was), one per
/// peer, from jobs run in [`ALL`] order.
fn ratios_vs_pf(sum: &mut Summary, what: &str, times: &[(Vec<f64>, String)], restore: bool) {
    let pf = &times[1].0;
    for (i, t) in ALL.iter().enumerate() {
        if *t == Tool::Pf {
            continue;
        }
        let name = if restore {
            t.restore_name()
        } else {
            t.backup_name()
        };
        sum.push((
            format!("{what}: pf vs {name} (throughput ratio, median of paired runs)"),
            paired_ratio(&times[i].0, pf),
        ));
    }
}

/// The edit scenarios, and with `pull` the restores after each edit.
/// Every tool starts each timed backup from a repository holding one
/// backup of the base version, made from the same path.
pub fn edits(
    p: &Peers,
    v: &Versions,
    r: &mut Runner,
    sum: &mut Summary,
    edits: &[Edit],
    pull: bool,
) -> Result<(), String> {
    v.switch("base")?;
    let src = v.src().display().to_string();
    let mb = data::du(&v.src()) as f64 / 1e6;
    // A puller that holds the base version.
    prep(
        "pf pull of the base version",
        &format!(
            "{} && {} && {}",
            p.init(Tool::Pf),
            p.backup(Tool::Pf, &src, "base"),
            p.pf_pull_store("prev")
        ),
    )?;
    for e in edits {
        v.switch(e.name)?;
        eprintln!(
            "==> after {}: {} bytes changed ({:.2}% of {:.0} MB)",
            e.label,
            e.changed,
            e.changed as f64 / 1e4 / mb,
            mb
        );
        let jobs: Vec<Job> = ALL
            .iter()
            .map(|&t| Job {
                name: format!("after {}: {}", e.label, t.backup_name()),
                mb,
                // A new repository holding one backup of the base version
                // (rebuilt rather than copied: saved copies of every
                // tool's repository would double the bench's disk use).
                setup: format!(
                    "{} && {} && {} && {}",
                    v.swap_sh(e.name, "base"),
                    p.init(t),
                    p.backup(t, &src, "base"),
                    v.swap_sh("base", e.name)
                ),
                cmd: p.backup(t, &src, e.name),
                log: None,
                grow: Some(p.repo(t)),
            })
            .collect();
        let times = r.jobs(&jobs)?;
        ratios_vs_pf(sum, &format!("after {}", e.label), &times, false);
        if !pull {
            continue;
        }
        // Each tool's live state now holds the base and the edited version.
        let jobs: Vec<Job> = ALL
            .iter()
            .map(|&t| Job {
                name: format!(
                    "pull after {}: {}",
                    e.label,
                    if t == Tool::Pf {
                        "pf pull (previous version local) + restore"
                    } else {
                        t.restore_name()
                    }
                ),
                mb,
                setup: if t == Tool::Pf {
                    format!("{} && {}", p.restore_setup(t), p.pf_load_store("prev"))
                } else {
                    p.restore_setup(t)
                },
                cmd: p.restore_with(t, e.name, "prev"),
                log: None,
                grow: None,
            })
            .collect();
        let times = r.jobs(&jobs)?;
        ratios_vs_pf(sum, &format!("pull after {}", e.label), &times, true);
    }
    v.switch("base")?;
    prep("clearing peer states", &p.clear())
}

/// The many-small-files data set: first backup and restore into an empty
/// directory, every tool from an empty repository.
pub fn small(
    p: &Peers,
    root: &Path,
    r: &mut Runner,
    sum: &mut Summary,
    n: u64,
) -> Result<(), String> {
    let dir = root.join("small");
    eprintln!("==> generating {n} small files in {}", dir.display());
    edits::small_files(&dir, n)?;
    let src = std::fs::canonicalize(&dir)
        .map_err(|e| e.to_string())?
        .display()
        .to_string();
    let mb = data::du(&dir) as f64 / 1e6;
    let what = format!("{n} small files");
    let jobs: Vec<Job> = ALL
        .iter()
        .map(|&t| Job {
            name: format!("{what}: {}", t.backup_name()),
            mb,
            setup: p.init(t),
            cmd: p.backup(t, &src, "small"),
            log: None,
            grow: Some(p.repo(t)),
        })
        .collect();
    let times = r.jobs(&jobs)?;
    ratios_vs_pf(sum, &what, &times, false);
    let jobs: Vec<Job> = ALL
        .iter()
        .map(|&t| Job {
            name: format!("{what}: {}", t.restore_name()),
            mb,
            setup: p.restore_setup(t),
            cmd: p.restore(t, "small"),
            log: None,
            grow: None,
        })
        .collect();
    let times = r.jobs(&jobs)?;
    ratios_vs_pf(sum, &format!("{what}, restore"), &times, true);
    prep("clearing peer states", &p.clear())
}

/// pf alone, one run each: first push and pull + restore of the base
/// version at `--size` (the rows' peak RSS is the figure wanted). The
/// source is read once before the push, untimed: the 1 GiB push it is
/// compared with reads a source that its earlier rows left in the page
/// cache, and a first read of 10 GiB measures the disk, not pf.
pub fn big(p: &Peers, v: &Versions, r: &mut Runner) -> Result<(), String> {
    v.switch("base")?;
    let src = v.src().display().to_string();
    let mb = data::du(&v.src()) as f64 / 1e6;
    let runs = std::mem::replace(&mut r.runs, 1);
    let t = Tool::Pf;
    let res = r
        .one(
            mb,
            "big: pf push (first, file)",
            &format!(
                "find {src} -type f -exec cat {{}} + > /dev/null && {}",
                p.init(t)
            ),
            &p.backup(t, &src, "base"),
            None,
        )
        .and_then(|_| {
            r.one(
                mb,
                "big: pf pull (empty store) + restore",
                &format!("{} && rm -rf {}/pf/store", p.restore_setup(t), p.work),
                &p.restore(t, "base"),
                None,
            )
        });
    r.runs = runs;
    res?;
    prep("clearing peer states", &p.clear())
}
