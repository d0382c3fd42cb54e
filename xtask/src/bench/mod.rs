//! `cargo xtask bench`: pf push/pull against baselines and peers (restic,
//! borg) on the same data, in the same run (ratios, medians of `--runs`
//! runs, interleaved). Prints a table and writes `target/bench/results.json`.
//! Benchmarks print figures; they never fail on timing. Options in [`opts`],
//! input data in [`data`] and [`edits`], timing in [`measure`], the peers'
//! commands in [`peers`], their scenarios in [`scenarios`] (encryption in
//! [`crypt`]), the remote and
//! zstd level rows in [`remote`], servers (the tests' launchers) in
//! [`servers`], the table and ratios in [`report`].

mod crypt;
mod data;
mod edits;
mod measure;
mod opts;
mod peers;
mod remote;
mod report;
mod scenarios;
mod servers;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use measure::{median, paired_ratio, timed, Job, Runner};
use opts::{Opts, Scenario};
use peers::{Peers, Tool};

/// Named ratios for the report, in the order they were measured.
pub type Summary = Vec<(String, f64)>;

/// Paths and the `pf` binary every row's command uses.
pub struct Ctx {
    /// The snapshot directory (the base version, at `<root>/src`).
    dd: String,
    /// The work directory (stores, repositories).
    ww: String,
    /// The release `pf`.
    pfs: String,
    /// `rm -rf` + `mkdir` of the work directory, then `sync` (each timed
    /// job starts with nothing of another's left to write back).
    fresh: String,
    /// Raw megabytes of the snapshot.
    mb: f64,
    /// `target/bench`.
    root: PathBuf,
    /// restic's and borg's commands (and pf's, for the peer scenarios).
    peers: Peers,
}

/// Entry point.
pub fn bench(args: &[String]) -> Result<(), String> {
    let o = opts::parse(args)?;
    let root = PathBuf::from("target/bench");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let root = fs::canonicalize(&root).map_err(|e| e.to_string())?;
    let pf = match &o.pf {
        Some(p) => p.clone(),
        None => build_pf(&o)?.display().to_string(),
    };
    // The snapshot used to live in <root>/data; it is <root>/v/base now.
    let _ = fs::remove_dir_all(root.join("data"));
    let v = edits::Versions::open(&root)?;
    eprintln!(
        "==> generating {} MiB snapshot in {}",
        o.size >> 20,
        v.dir("base").display()
    );
    data::generate(&v.dir("base"), o.size)?;
    // The edited versions are hard links to the base: made before any
    // backup, so the base's files keep their ctime from here on.
    let mut edit_list = Vec::new();
    if o.has(Scenario::Edits) || o.has(Scenario::Pull) {
        eprintln!("==> editing copies of the snapshot");
        edit_list.push(v.scattered()?);
        edit_list.push(v.appends()?);
    }
    v.switch("base")?;
    let raw = data::du(&v.src());
    let ww = root.join("work").display().to_string();
    let c = Ctx {
        dd: v.src().display().to_string(),
        fresh: format!("rm -rf {ww} && mkdir -p {ww} && sync"),
        ww,
        peers: Peers {
            pf: pf.clone(),
            work: root.join("peers").display().to_string(),
        },
        pfs: pf,
        mb: raw as f64 / 1e6,
        root: root.clone(),
    };
    let mut r = Runner {
        runs: o.runs,
        rows: Vec::new(),
    };
    let mut sum = Summary::new();
    eprintln!(
        "==> {:?} on {:.0} MB ({} runs each, median)",
        o.scenarios, c.mb, o.runs
    );
    // A graveyard left by an interrupted bench goes first (restores move
    // earlier outputs there rather than delete them, see `peers::retire`).
    timed(&peers::bury())?;
    let result = run_scenarios(&o, &c, &v, &mut r, &mut sum, &edit_list);
    // Put the base version back under v/ whatever happened.
    v.park()?;
    timed(&peers::bury())?;
    let (text_raw, _servers) = result?;
    report::write(
        &root,
        &r.rows,
        &report::Inputs {
            summary: sum,
            raw,
            levels: &o.levels,
            text_raw,
            edits: &edit_list,
        },
    )
}

/// Runs the selected scenarios; returns the text directory's raw bytes
/// (level rows) and the servers the remote rows started (kept running
/// until the report is written).
fn run_scenarios(
    o: &Opts,
    c: &Ctx,
    v: &edits::Versions,
    r: &mut Runner,
    sum: &mut Summary,
    edit_list: &[edits::Edit],
) -> Result<(u64, Vec<Box<dyn std::any::Any>>), String> {
    let mut servers: Vec<Box<dyn std::any::Any>> = Vec::new();
    if o.has(Scenario::Base) {
        file_rows(c, r, sum)?;
    }
    // The scenarios with restore targets first: their earlier outputs
    // stay in the graveyard while the disk has room (`peers::retire`).
    if o.has(Scenario::Crypt) {
        crypt::crypt(&c.peers, v, r, sum)?;
    }
    if o.has(Scenario::Small) {
        scenarios::small(&c.peers, &c.root, r, sum, o.small_files)?;
    }
    let mut text_raw = 0;
    if o.has(Scenario::Levels) {
        text_raw = remote::level_rows(c, r, &o.levels, o.size)?;
    }
    if o.has(Scenario::Edits) || o.has(Scenario::Pull) {
        scenarios::edits(&c.peers, v, r, sum, edit_list, o.has(Scenario::Pull))?;
    }
    if o.has(Scenario::Big) {
        scenarios::big(&c.peers, v, r)?;
    }
    if o.oci {
        let reg = remote::oci_rows(c, r)?;
        sum.push((
            "OCI push vs file push (throughput ratio)".into(),
            r.secs_ratio("pf push (first, oci)", "pf push (first, file)"),
        ));
        if let (Some(p), Some(t), Some(u)) = (
            r.secs("pf push (first, oci)"),
            r.secs("tar | zstd"),
            r.secs("curl PUT of the tar.zst"),
        ) {
            sum.push((
                "OCI push vs tar|zstd + one-blob curl PUT (throughput ratio)".into(),
                (t + u) / p,
            ));
        }
        servers.push(Box::new(reg));
    }
    if o.s3 {
        let moto = remote::s3_rows(c, r)?;
        sum.push((
            "S3 push vs file push (throughput ratio)".into(),
            r.secs_ratio("pf push (first, s3)", "pf push (first, file)"),
        ));
        servers.push(Box::new(moto));
    }
    Ok((text_raw, servers))
}

/// `cargo build --release -p pf-cli` with the backends `o` asks for.
fn build_pf(o: &Opts) -> Result<PathBuf, String> {
    eprintln!("==> building pf (release)");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q", "-p", "pf-cli"])
        .args(match (o.oci, o.s3) {
            (true, true) => &["--features", "oci,s3"][..],
            (true, false) => &["--features", "oci"][..],
            (false, true) => &["--features", "s3"][..],
            (false, false) => &[],
        })
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("building pf failed".into());
    }
    fs::canonicalize("target/release/pf").map_err(|e| e.to_string())
}

/// The file rows: baselines and peers, first push, re-pushes, pulls; the
/// paired ratios go into `sum`.
fn file_rows(c: &Ctx, r: &mut Runner, sum: &mut Summary) -> Result<(), String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        root,
        peers,
    } = c;
    let mb = *mb;
    r.one(
        mb,
        "sha256sum (hashing limit)",
        "",
        &format!("find {dd} -type f -print0 | xargs -0 cat | sha256sum"),
        None,
    )?;
    let copy = format!("{ww}-copy");
    r.one(
        mb,
        "cp -r",
        &format!("{fresh} && {}", peers::retire(&copy)),
        &format!("cp -r {dd} {copy}"),
        None,
    )?;
    // The baselines work in their own directory, so they can run between
    // pf's runs without touching pf's repository.
    let bw = format!("{ww}-baseline");
    let bfresh = format!("rm -rf {bw} && mkdir -p {bw} && sync");
    let push = format!("{pfs} -q --json --store {ww}/store push {dd} file://{ww}/repo");
    // restic and borg each start from an empty repository (in their own
    // directories, like the baselines); their first backup is archive "base".
    let peer_jobs = |f: &dyn Fn(Tool) -> Job<'static>| [Tool::Restic, Tool::Borg].map(f);
    let mut jobs = vec![
        Job {
            name: "tar | zstd -3 -T0".into(),
            mb,
            setup: bfresh.clone(),
            cmd: format!("tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst"),
            log: None,
            grow: Some(bw.clone()),
        },
        Job {
            name: "pf push (first, file)".into(),
            mb,
            setup: fresh.clone(),
            cmd: push.clone(),
            log: None,
            grow: Some(format!("{ww}/repo")),
        },
    ];
    jobs.extend(peer_jobs(&|t| Job {
        name: format!("{} (first)", t.backup_name()),
        mb,
        setup: peers.init(t),
        cmd: peers.backup(t, dd, "base"),
        log: None,
        grow: Some(peers.repo(t)),
    }));
    // The same archive made durable, as pf's push (and restic's and
    // borg's backups) are before they return: an fsync of the file.
    jobs.push(Job {
        name: "tar | zstd -3 -T0, fsynced".into(),
        mb,
        setup: bfresh.clone(),
        cmd: format!(
            "tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst && sync {bw}/snap.tar.zst"
        ),
        log: None,
        grow: Some(bw.clone()),
    });
    let first_push = r.jobs(&jobs)?;
    sum.push((
        "first push vs tar|zstd (throughput ratio, median of paired runs)".into(),
        paired_ratio(&first_push[0].0, &first_push[1].0),
    ));
    for (i, n) in [
        (2, "restic backup"),
        (3, "borg create"),
        (4, "tar|zstd, fsynced"),
    ] {
        sum.push((
            format!("first push vs {n} (throughput ratio, median of paired runs)"),
            paired_ratio(&first_push[i].0, &first_push[1].0),
        ));
    }
    // The state for the following rows: one pushed version (restic and
    // borg keep theirs from the last run above).
    timed(&format!("{fresh} && {push}"))?;
    let mut jobs = vec![Job {
        name: "pf re-push unchanged".into(),
        mb,
        setup: String::new(),
        cmd: push.clone(),
        log: None,
        grow: Some(format!("{ww}/repo")),
    }];
    jobs.extend(peer_jobs(&|t| Job {
        name: format!("{} unchanged", t.backup_name()),
        mb,
        setup: String::new(),
        // borg archive names must be new.
        cmd: peers.backup(t, dd, "again$(date +%s%N)"),
        log: None,
        grow: Some(peers.repo(t)),
    }));
    let unchanged = r.jobs(&jobs)?;
    // 1% in-place edits in the large file, and a 1 MiB insertion in its middle.
    let edited = fs::canonicalize(root)
        .map_err(|e| e.to_string())?
        .join("edited");
    let ed = edited.display().to_string();
    let prep_edit = format!(
        "rm -rf {ed} && cp -r {dd} {ed} && python3 -c \"import os\nf=open('{ed}/model.bin','r+b')\nn=os.path.getsize('{ed}/model.bin')\nfor i in range(100):\n  f.seek((i*7919*104729)%n); f.write(b'EDIT'*int(n/100/100/4))\n\""
    );
    timed(&prep_edit)?;
    r.one(
        mb,
        "pf re-push after 1% edits",
        &format!("{fresh} && {push}"),
        &format!("{pfs} -q --json --store {ww}/store push {ed} file://{ww}/repo"),
        None,
    )?;
    let prep_insert = format!(
        "rm -rf {ed} && cp -r {dd} {ed} && python3 -c \"import os\np='{ed}/model.bin'\nd=open(p,'rb').read()\nm=len(d)//2\nopen(p,'wb').write(d[:m]+os.urandom(1<<20)+d[m:])\""
    );
    timed(&prep_insert)?;
    r.one(
        mb,
        "pf re-push after 1 MiB insertion",
        &format!("{fresh} && {push}"),
        &format!("{pfs} -q --json --store {ww}/store push {ed} file://{ww}/repo"),
        None,
    )?;
    timed(&format!("{fresh} && {push}"))?;
    let mut jobs = vec![
            Job {
                name: "zstd -dc | tar -x".into(),
                mb,
                setup: format!(
                    "{} && {bfresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst && mkdir {bw}/x && sync",
                    peers::retire_output(&format!("{bw}/x"))
                ),
                cmd: format!("zstd -dc {bw}/snap.tar.zst | tar -C {bw}/x -xf -"),
                log: None,
                grow: None,
            },
            Job {
                name: "pf pull (empty store) + restore".into(),
                mb,
                // Reads the repository once, as the baseline's setup has just
                // written its tar.zst: both then read warm input (the file
                // backend's push drops what it wrote from the page cache).
                setup: format!(
                    "{} && rm -rf {ww}/store2 && find {ww}/repo -type f -exec cat {{}} + > /dev/null && {pfs} --version > /dev/null",
                    peers::retire_output(&format!("{ww}/out"))
                ),
                cmd: format!(
                    "{pfs} -q --json --store {ww}/store2 pull file://{ww}/repo --into {ww}/out"
                ),
                log: None,
                grow: None,
            },
        ];
    // restic restores its latest snapshot (an unchanged re-backup of the
    // same data), borg the archive "base".
    jobs.extend(peer_jobs(&|t| Job {
        name: t.restore_name().into(),
        mb,
        setup: peers.restore_setup(t),
        cmd: peers.restore(t, "base"),
        log: None,
        grow: None,
    }));
    let pull = r.jobs(&jobs)?;
    // The remaining rows are pf's alone; the disk is needed more.
    timed(&format!("rm -rf {bw} && {}", peers.clear()))?;
    sum.push((
        "pull+restore vs zstd -dc|tar -x (throughput ratio, median of paired runs)".into(),
        paired_ratio(&pull[0].0, &pull[1].0),
    ));
    for (i, n) in [(2, "restic restore"), (3, "borg extract")] {
        sum.push((
            format!("pull+restore vs {n} (throughput ratio, median of paired runs)"),
            paired_ratio(&pull[i].0, &pull[1].0),
        ));
    }
    r.one(
        mb,
        "pf pull (store has it) + restore",
        // A plain pull (no --into) keeps every blob in the store.
        &format!(
            "{} && ([ -d {ww}/store3 ] || {pfs} -q --store {ww}/store3 pull file://{ww}/repo)",
            peers::retire_output(&format!("{ww}/out"))
        ),
        &format!("{pfs} -q --json --store {ww}/store3 pull file://{ww}/repo --into {ww}/out"),
        None,
    )?;
    r.one(
        mb,
        "pf pull (store has previous version) + restore",
        // The store holds the original version; the repository then gets
        // the version with the 1 MiB insertion, which is pulled and restored.
        &format!(
            "{fresh} && {push} && {pfs} -q --store {ww}/store4 pull file://{ww}/repo && {pfs} -q --store {ww}/store push {ed} file://{ww}/repo"
        ),
        &format!("{pfs} -q --json --store {ww}/store4 pull file://{ww}/repo --into {ww}/out"),
        None,
            )?;
    sum.push((
        "re-push unchanged / first push (time)".into(),
        median(unchanged[0].0.clone()) / median(first_push[1].0.clone()),
    ));
    for (i, n) in [(1, "restic"), (2, "borg")] {
        sum.push((
            format!("{n}: backup unchanged / first backup (time)"),
            median(unchanged[i].0.clone()) / median(first_push[i + 1].0.clone()),
        ));
    }
    // Later scenarios need the disk more than these states.
    timed(&format!("rm -rf {ww} {ed}"))?;
    Ok(())
}
