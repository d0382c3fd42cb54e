//! `cargo xtask bench`: pf push/pull against baselines on the same data, in
//! the same run (ratios, medians of `--runs` runs). Prints a table and writes
//! `target/bench/results.json`. Benchmarks print figures; they never fail on
//! timing. Input data in [`data`], timing in [`measure`], servers (the
//! tests' launchers) in [`servers`], the table and ratios in [`report`].

mod data;
mod measure;
mod report;
mod servers;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use measure::{paired_ratio, timed, Job, Runner};

struct Opts {
    size: u64,
    runs: usize,
    /// Also benchmark the OCI backend against a local docker-registry.
    oci: bool,
    /// Also benchmark the S3 backend against a local moto server.
    s3: bool,
    /// zstd levels to compare on a first push (whole snapshot and its
    /// compressible part); empty: no level rows.
    levels: Vec<i32>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        size: 1 << 30,
        runs: 3,
        oci: false,
        s3: false,
        levels: vec![1, 3, 6, 9],
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--size" => {
                let v = args.get(i + 1).ok_or("--size needs a value")?;
                o.size = parse_size(v)?;
                i += 1;
            }
            "--runs" => {
                o.runs = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .ok_or("--runs needs a number")?;
                i += 1;
            }
            "--backend" => {
                let v = args.get(i + 1).ok_or("--backend needs a value")?;
                // The file backend always runs: it is the reference row.
                // Repeatable, or comma-separated.
                for b in v.split(',') {
                    match b {
                        "file" => {}
                        "oci" => o.oci = true,
                        "s3" => o.s3 = true,
                        _ => return Err(format!("--backend {b}: one of file, oci, s3")),
                    }
                }
                i += 1;
            }
            "--levels" => {
                let v = args.get(i + 1).ok_or("--levels needs a value")?;
                o.levels = if v == "none" {
                    vec![]
                } else {
                    v.split(',')
                        .map(|l| match l.parse::<i32>() {
                            Ok(n) if (1..=22).contains(&n) => Ok(n),
                            _ => Err(format!("--levels {l}: a zstd level 1..=22")),
                        })
                        .collect::<Result<_, _>>()?
                };
                i += 1;
            }
            other => return Err(format!("unknown bench option {other}")),
        }
        i += 1;
    }
    Ok(o)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad size {s:?} (e.g. 1GiB, 256MiB)"))
}

/// Paths and the `pf` binary every row's command uses.
struct Ctx {
    /// The generated snapshot directory.
    dd: String,
    /// The work directory (stores, repositories).
    ww: String,
    /// The release `pf`.
    pfs: String,
    /// `rm -rf` + `mkdir` of the work directory.
    fresh: String,
    /// Raw megabytes of the snapshot.
    mb: f64,
    /// `target/bench`.
    root: PathBuf,
}

/// Entry point.
pub fn bench(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let root = PathBuf::from("target/bench");
    let data = root.join("data");
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let pf = build_pf(&o)?;
    eprintln!(
        "==> generating {} MiB snapshot in {}",
        o.size >> 20,
        data.display()
    );
    data::generate(&data, o.size)?;
    let raw = data::du(&data);
    let d = fs::canonicalize(&data).map_err(|e| e.to_string())?;
    let w = fs::canonicalize(&root)
        .map_err(|e| e.to_string())?
        .join("work");
    let ww = w.display().to_string();
    let c = Ctx {
        dd: d.display().to_string(),
        fresh: format!("rm -rf {ww} && mkdir -p {ww}"),
        ww,
        pfs: pf.display().to_string(),
        mb: raw as f64 / 1e6,
        root: root.clone(),
    };
    let mut r = Runner {
        runs: o.runs,
        rows: Vec::new(),
    };
    eprintln!(
        "==> baselines and pf on {:.0} MB ({} runs each, median)",
        c.mb, o.runs
    );
    let (push_ratio, pull_ratio) = file_rows(&c, &mut r)?;
    let text_raw = level_rows(&c, &mut r, &o.levels, o.size)?;
    let _registry = if o.oci {
        Some(oci_rows(&c, &mut r)?)
    } else {
        None
    };
    let _moto = if o.s3 {
        Some(s3_rows(&c, &mut r)?)
    } else {
        None
    };
    report::write(
        &root,
        &r.rows,
        &report::Inputs {
            push_ratio,
            pull_ratio,
            oci: o.oci,
            s3: o.s3,
            raw,
            levels: &o.levels,
            text_raw,
        },
    )
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

/// The file rows: baselines, first push, re-pushes, pulls. Returns the
/// paired push and pull throughput ratios against tar|zstd.
fn file_rows(c: &Ctx, r: &mut Runner) -> Result<(f64, f64), String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        root,
    } = c;
    let mb = *mb;
    r.one(
        mb,
        "sha256sum (hashing limit)",
        "",
        &format!("find {dd} -type f -print0 | xargs -0 cat | sha256sum"),
        None,
    )?;
    r.one(mb, "cp -r", fresh, &format!("cp -r {dd} {ww}/copy"), None)?;
    // The baselines work in their own directory, so they can run between
    // pf's runs without touching pf's repository.
    let bw = format!("{ww}-baseline");
    let bfresh = format!("rm -rf {bw} && mkdir -p {bw}");
    let push = format!("{pfs} -q --json --store {ww}/store push {dd} file://{ww}/repo");
    let first_push = r.jobs(&[
        Job {
            name: "tar | zstd -3 -T0".into(),
            mb,
            setup: bfresh.clone(),
            cmd: format!("tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst"),
            log: None,
        },
        Job {
            name: "pf push (first, file)".into(),
            mb,
            setup: fresh.clone(),
            cmd: push.clone(),
            log: None,
        },
    ])?;
    let push_ratio = paired_ratio(&first_push[0].0, &first_push[1].0);
    // The state for the following rows: one pushed version.
    timed(&format!("{fresh} && {push}"))?;
    r.one(mb, "pf re-push unchanged", "", &push, None)?;
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
    let pull = r.jobs(
        &[
            Job {
                name: "zstd -dc | tar -x".into(),
                mb,
                setup: format!(
                    "{bfresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {bw}/snap.tar.zst && mkdir {bw}/x"
                ),
                cmd: format!("zstd -dc {bw}/snap.tar.zst | tar -C {bw}/x -xf -"),
                log: None,
            },
            Job {
                name: "pf pull (empty store) + restore".into(),
                mb,
                // Reads the repository once, as the baseline's setup has just
                // written its tar.zst: both then read warm input (the file
                // backend's push drops what it wrote from the page cache).
                setup: format!(
                    "rm -rf {ww}/store2 {ww}/out && find {ww}/repo -type f -exec cat {{}} + > /dev/null"
                ),
                cmd: format!(
                    "{pfs} -q --json --store {ww}/store2 pull file://{ww}/repo --into {ww}/out"
                ),
                log: None,
            },
        ],
            )?;
    let pull_ratio = paired_ratio(&pull[0].0, &pull[1].0);
    r.one(
        mb,
        "pf pull (store has it) + restore",
        // A plain pull (no --into) keeps every blob in the store.
        &format!(
            "rm -rf {ww}/out && ([ -d {ww}/store3 ] || {pfs} -q --store {ww}/store3 pull file://{ww}/repo)"
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
    Ok((push_ratio, pull_ratio))
}

/// The zstd level rows; returns the raw bytes of the text directory.
fn level_rows(c: &Ctx, r: &mut Runner, levels: &[i32], size: u64) -> Result<u64, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        root,
    } = c;
    let mb = *mb;
    // The zstd level: only compressible bytes feel it (incompressible blobs
    // are stored as raw blocks), so each level also pushes a text-only
    // directory of chat-log-like JSON lines (1/16 of --size).
    for l in levels {
        r.one(
            mb,
            &format!("pf push (first, file), zstd -{l}"),
            fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {dd} file://{ww}/repo"
            ),
            None,
        )?;
    }
    let text = root.join("text");
    if !levels.is_empty() {
        data::generate_text(&text, size / 16)?;
    }
    let text_raw = data::du(&text);
    let text_mb = text_raw as f64 / 1e6;
    let tt = fs::canonicalize(&text)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for l in levels {
        r.one(
            text_mb,
            &format!("pf push text logs, zstd -{l}"),
            fresh,
            &format!(
                "{pfs} -q --json --zstd-level {l} --store {ww}/store push {tt} file://{ww}/repo"
            ),
            None,
        )?;
    }
    Ok(text_raw)
}

/// The OCI rows against a local docker-registry.
fn oci_rows(c: &Ctx, r: &mut Runner) -> Result<servers::Registry, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        ..
    } = c;
    let mb = *mb;
    let reg = servers::Registry::start();
    let h = reg.host().to_string();
    let reg_log = Some(reg.log());
    // A new repository per run (the shell expands the name), so every
    // run uploads everything; the store is fresh too, as for the file row.
    r.one(
        mb,
        "pf push (first, oci)",
        fresh,
        &format!("{pfs} -q --json --store {ww}/store push {dd} oci://{h}/bench/r$(date +%s%N):v1"),
        reg_log,
    )?;
    // One more push, for the pull rows below; it also shows where the
    // CPU goes: pf's own time and the registry's (from /proc).
    let reg_before = reg.cpu_secs();
    let m = timed(&format!(
        "{fresh} && {pfs} -q --json --store {ww}/store push {dd} oci://{h}/bench/pull:v1"
    ))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "    oci push CPU: pf {:.2} s, registry {:.2} s, wall {:.2} s ({cores} cores: {:.2} s of CPU available)",
        m.cpu_secs,
        reg.cpu_secs() - reg_before,
        m.secs,
        cores as f64 * m.secs
    );
    r.one(
        mb,
        "pf pull (empty store) + restore, oci",
        &format!("rm -rf {ww}/store2 {ww}/out"),
        &format!(
            "{pfs} -q --json --store {ww}/store2 pull oci://{h}/bench/pull:v1 --into {ww}/out"
        ),
        reg_log,
    )?;
    // The registry's floor: the whole snapshot as one tar.zst blob sent
    // with a single streamed PUT by curl (digest computed in the setup),
    // i.e. the leanest possible client in front of the same registry.
    r.one(
        mb,
        "curl PUT of the tar.zst (one blob)",
        &format!(
            "{fresh} && tar -C {dd} -cf - . | zstd -q -3 -T0 > {ww}/snap.tar.zst && sha256sum {ww}/snap.tar.zst | cut -d' ' -f1 > {ww}/snap.sha"
        ),
        &format!(
            "loc=$(curl -sf -o /dev/null -D - -X POST http://{h}/v2/bench/curl$(date +%s%N)/blobs/uploads/ | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p') && curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T {ww}/snap.tar.zst \"$loc&digest=sha256:$(cat {ww}/snap.sha)\""
        ),
        reg_log,
            )?;
    Ok(reg)
}

/// The S3 rows against a local moto server.
fn s3_rows(c: &Ctx, r: &mut Runner) -> Result<servers::Moto, String> {
    let Ctx {
        dd,
        ww,
        pfs,
        fresh,
        mb,
        ..
    } = c;
    let mb = *mb;
    let moto = servers::Moto::start();
    let env = moto.env();
    let bucket = moto.bucket();
    let log = Some(moto.log());
    r.one(
        mb,
        "pf push (first, s3)",
        fresh,
        &format!(
            "{env} {pfs} -q --json --store {ww}/store push {dd} s3://{bucket}/r$(date +%s%N):v1"
        ),
        log,
    )?;
    timed(&format!(
        "{fresh} && {env} {pfs} -q --json --store {ww}/store push {dd} s3://{bucket}/pull:v1"
    ))?;
    r.one(
        mb,
        "pf pull (empty store) + restore, s3",
        &format!("rm -rf {ww}/store2 {ww}/out"),
        &format!(
            "{env} {pfs} -q --json --store {ww}/store2 pull s3://{bucket}/pull:v1 --into {ww}/out"
        ),
        log,
    )?;
    Ok(moto)
}
